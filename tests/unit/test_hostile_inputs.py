"""Hostile and conflicting inputs: each is refused with one line and exit 2, quickly, touching nothing.

Every case that `bert-eval run` can refuse before submitting runs the real command (in a child process
where a case could exhaust memory: the bombs run under an address-space limit and a time limit) and
asserts the one-line message, the exit code, the time the command took and that the runs directory is
byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bert_eval.cli import app
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.modeling import check_model_roots
from bert_eval.core.storage.layout import experiment_file, write_experiment_record
from bert_eval.experiment import MAX_FILE_BYTES, ExperimentFileError, load_experiment, parse_experiment
from bert_eval.settings import get_settings
from bert_eval.spec import RunSpec
from bert_eval.temporal.submit import (
    RecordedExperiment,
    check_runs_dir,
    claim_conflict,
    extend_experiment,
    refusal,
)

# Anything refusable before submitting is refused within this (the command itself, not interpreter start).
REFUSAL_S = 5.0
RUN = "model: m\n    dataset: glue/sst2\n"


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` (relative name -> sha256) and every directory: byte-for-byte identity."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs directory holding one finished experiment's record and a run directory."""
    runs = tmp_path / "bert_runs"
    (runs / "runs" / "untouched").mkdir(parents=True)
    (runs / "runs" / "untouched" / "spec.json").write_text('{"spec": "left alone"}\n')
    spec = RunSpec.model_validate({"run_id": "kept", "model": "m", "dataset": "glue/sst2"})
    write_experiment_record(
        experiment_file(runs, "probe-base"),
        {"experiment_id": "probe-base", "run_ids": ["kept"], "runs": [spec.model_dump(mode="json")], "search": None},
    )
    monkeypatch.setenv("BERT_EVAL_RUNS_DIR", str(runs))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # nothing may be submitted
    get_settings.cache_clear()
    yield runs
    get_settings.cache_clear()


def _run_cli(runs_dir: Path, path: Path, *args: str) -> tuple[int, str, float]:
    before = _tree(runs_dir)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(path), "--no-wait", *args])
    elapsed = time.monotonic() - started
    assert _tree(runs_dir) == before, "the runs directory changed"
    return result.exit_code, result.stderr, elapsed


def _assert_refused(code: int, stderr: str, elapsed: float, *expected: str) -> None:
    assert code == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr[:500]
    assert "Traceback" not in stderr and len(stderr) < 1200, stderr[:500]
    for text in expected:
        assert text in stderr, stderr
    assert elapsed < REFUSAL_S


CASES = {
    # name: (file contents, text the one line must hold)
    "duplicate key": (
        f"runs:\n  - {RUN}    train:\n      learning_rate: 1.0e-4\n      learning_rate: 0.5\n",
        "key 'learning_rate' is given twice (first on line 5); keep one",
    ),
    "alias": ("defaults: &d {model: m, dataset: glue/sst2}\nruns: [*d]\n", "alias *d found: aliases are not allowed"),
    "binary file": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 40, "not UTF-8 text (byte 0)"),
    "rich markup in a value": (f'runs:\n  - {RUN}    seeds: "[/red]"\n', "got '[/red]'"),
    "markup in a hint": (
        "runs:\n  - model: m\n    dataset: {name: glue/sst2, task: classification}\n"
        "search: {space: {train.learning_rate: {loguniform: [1.0e-3, 1.0e-5]}}}\n",
        "write [low, high] with low < high",
    ),
    "nan learning rate": (
        f"runs:\n  - {RUN}    train: {{learning_rate: .nan}}\n",
        "train.learning_rate: NaN (not a number)",
    ),
    "boolean as a number": (
        f"runs:\n  - {RUN}    train: {{batch_size: true}}\n",
        "batch_size: True is a boolean; give a number",
    ),
    "seeds and a grid over the seed": (
        f"runs:\n  - {RUN}    seeds: 2\ngrid: {{train.seed: [1, 2]}}\n",
        "has seeds: and grid: sets train.seed",
    ),
    "six-key grid": (
        f"runs:\n  - {RUN}grid:\n"
        + "".join(f"  train.k{k}: [{', '.join(str(v) for v in range(8))}]\n" for k in range(6)),
        "expand to 262144 runs; an experiment holds at most 1000",
    ),
    "deep nesting": ("runs: " + "[" * 200 + "]" * 200 + "\n", "nested more than 32 levels deep"),
    "long run id": (f"runs:\n  - {RUN}    run_id: {'x' * 100_000}\n", "... (100002 characters)"),
    "experiment id reused with other runs": (
        f"experiment_id: probe-base\nruns:\n  - {RUN}    run_id: other\n",
        "experiment probe-base already exists with different runs",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_file_is_refused_in_one_line_touching_nothing(name: str, runs_dir: Path, tmp_path: Path) -> None:
    content, expected = CASES[name]
    path = tmp_path / "experiment.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    _assert_refused(*_run_cli(runs_dir, path), expected)


def test_the_experiment_id_conflict_names_the_runs_and_the_way_out(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(f"experiment_id: probe-base\nruns:\n  - {RUN}    run_id: other\n")
    code, stderr, elapsed = _run_cli(runs_dir, path)
    _assert_refused(
        code,
        stderr,
        elapsed,
        "only in this file: other",
        "only in the recorded experiment: kept",
        "--extend",
        "--replace",
        "new experiment_id",
        "Nothing was submitted",
    )


def test_resubmitting_the_same_contents_is_not_a_conflict(runs_dir: Path) -> None:
    experiment = parse_experiment(
        {"experiment_id": "probe-base", "runs": [{"run_id": "kept", "model": "m", "dataset": "glue/sst2"}]}
    )
    recorded = RecordedExperiment(runs=experiment.runs, search=None, where="record")
    assert claim_conflict(experiment, recorded) is None
    check_runs_dir(experiment, runs_dir)  # the same runs as the record: no conflict


def test_a_running_experiment_with_other_runs_is_never_attached_to() -> None:
    mine = parse_experiment(
        {"experiment_id": "busy", "runs": [{"run_id": "new", "model": "m", "dataset": "glue/sst2"}]}
    )
    theirs = parse_experiment(
        {
            "experiment_id": "busy",
            "runs": [{"run_id": "new", "model": "m", "dataset": "glue/sst2", "train": {"seed": 7}}],
        }
    )
    conflict = claim_conflict(
        mine, RecordedExperiment(runs=theirs.runs, search=None, where="workflow x, running", running=True)
    )
    assert conflict is not None and conflict.startswith(
        "experiment busy is running with different runs (workflow x, running)"
    )
    assert "changed: new" in conflict and "wait for it to finish" in conflict and "\n" not in conflict


def test_extend_keeps_the_recorded_runs_and_adds_the_new_ones() -> None:
    old = parse_experiment(
        {"experiment_id": "e", "runs": [{"run_id": f"r{i}", "model": "m", "dataset": "glue/sst2"} for i in range(5)]}
    )
    new = parse_experiment({"experiment_id": "e", "runs": [{"run_id": "added", "model": "m", "dataset": "glue/sst2"}]})
    extended = extend_experiment(new, RecordedExperiment(runs=old.runs, search=None, where="record"))
    assert [run.id for run in extended.runs] == ["r0", "r1", "r2", "r3", "r4", "added"]
    assert claim_conflict(extended, RecordedExperiment(runs=extended.runs, search=None, where="record")) is None


def test_a_superseded_record_is_kept_not_lost(tmp_path: Path) -> None:
    path = experiment_file(tmp_path, "probe-base")
    first = {"experiment_id": "probe-base", "run_ids": ["a", "b", "c", "d", "e"], "runs": []}
    write_experiment_record(path, first)
    write_experiment_record(path, first)  # the same runs again: nothing kept aside
    assert sorted(p.name for p in path.parent.iterdir()) == ["probe-base.json"]
    write_experiment_record(path, {"experiment_id": "probe-base", "run_ids": ["z"], "runs": []})
    write_experiment_record(path, {"experiment_id": "probe-base", "run_ids": ["z"], "runs": []})
    kept = [p for p in path.parent.iterdir() if ".superseded-" in p.name]
    assert len(kept) == 1 and json.loads(kept[0].read_text())["run_ids"] == ["a", "b", "c", "d", "e"]
    assert json.loads(path.read_text())["run_ids"] == ["z"]


def test_extend_and_replace_together_are_refused(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(f"runs:\n  - {RUN}")
    _assert_refused(*_run_cli(runs_dir, path, "--extend", "--replace"), "--extend and --replace exclude each other")


def test_a_file_over_the_size_cap_is_refused_before_parsing(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as handle:
        handle.write(b"runs:\n")
        handle.seek(50 * 1024 * 1024)
        handle.write(b"\n")
    _assert_refused(*_run_cli(runs_dir, path), f"larger than {MAX_FILE_BYTES // 1024} KiB")


# Each of these exhausted memory or time on a loader without limits.
BOMBS = {
    "alias bomb in seeds": "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    f"runs:\n  - {RUN}    seeds: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
    "grid of 8^6 deep copies": f"runs:\n  - {RUN}    eval: {{split: {'v' * 60}}}\ngrid:\n"
    + "".join(f"  train.p{k}: [{', '.join(str(v) for v in range(8))}]\n" for k in range(6)),
    "seeds over many runs": "runs:\n" + "  - {model: m, dataset: glue/sst2, seeds: 100}\n" * 900,
}

_BOMB_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from bert_eval.experiment import ExperimentFileError, load_experiment
    limit = 1 << 30  # 1 GiB of address space beyond what the interpreter holds now
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + limit, used + limit))
    started = time.monotonic()
    try:
        load_experiment(sys.argv[1])
        outcome = "accepted"
    except ExperimentFileError as exc:
        outcome = str(exc)
    except MemoryError:
        outcome = "MemoryError"
    print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
    """
)


@pytest.mark.parametrize("name", list(BOMBS))
def test_small_files_that_would_exhaust_the_machine_are_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMBS[name])
    assert path.stat().st_size < 64 * 1024
    done = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["outcome"] not in ("accepted", "MemoryError"), found
    assert "\n" not in found["outcome"] and len(found["outcome"]) < 600, found["outcome"][:600]
    assert found["seconds"] < REFUSAL_S


def test_a_seed_count_too_large_is_refused_without_quoting_it(tmp_path: Path) -> None:
    with pytest.raises(ExperimentFileError, match=r"seeds must be from 1 to 100, got 10{19}\.\.\. \(201 characters\)"):
        parse_experiment({"runs": [{"model": "m", "dataset": "glue/sst2", "seeds": 10**200}]})


def test_a_boolean_is_still_a_boolean_where_one_belongs() -> None:
    experiment = parse_experiment({"runs": [{"model": "m", "dataset": "glue/sst2", "train": {"use_gpu": False}}]})
    assert experiment.runs[0].train.use_gpu is False


def test_the_loader_still_reads_the_packaged_experiments() -> None:
    packaged = Path(__file__).parents[2] / "services" / "bert_eval" / "experiments"
    for path in sorted(packaged.glob("*.yaml")):
        assert load_experiment(path).runs


# --------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("b", "expected"),
    [
        ("BASE-S1", "A and B are the same run(s) (base-s1)"),
        ("other", "run base-s1 has no evaluation of split 'validation' under "),  # an unknown run
    ],
)
def test_compare_refuses_before_importing_the_ml_stack(tmp_path: Path, b: str, expected: str) -> None:
    """The comparison's argument checks, the runs' existence included, run before scipy, torch and transformers
    are imported."""
    (tmp_path / "runs" / "other").mkdir(parents=True)
    child = textwrap.dedent(
        """
        import sys, time
        from bert_eval.compare import compare
        started = time.monotonic()
        try:
            compare(sys.argv[1], ["base-s1"], [sys.argv[2]])
            message = "accepted"
        except ValueError as exc:
            message = str(exc)
        elapsed = time.monotonic() - started
        heavy = sorted(m for m in ("torch", "transformers", "scipy") if m in sys.modules)
        print(f"{elapsed:.3f}", ",".join(heavy) or "-", message, sep="|")
        """
    )
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path), b], capture_output=True, text=True, timeout=120)
    elapsed, heavy, message = done.stdout.strip().splitlines()[-1].split("|", 2)
    assert heavy == "-" and float(elapsed) < 1.0, done.stdout
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ("base-s1", "base-s1", "A and B are the same run(s) (base-s1)"),
        ("x=r1,r2", "y=r2,r1", "A and B are the same run(s) (r1, r2)"),
        ("r1,r2", "r2,r3", "run r2 is on both sides"),
    ],
)
def test_compare_refuses_a_run_against_itself_in_one_line(tmp_path: Path, a: str, b: str, message: str) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(app, ["compare", a, b, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------------------------- refusals found by the coordinator


def test_the_coordinators_refusal_is_read_out_of_the_workflow_failure() -> None:
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    refused = ApplicationError("run r: the data's task has no metric 'mse'", type="InvalidInput", non_retryable=True)
    failure = WorkflowFailureError(cause=refused)
    failure.__cause__ = refused
    assert refusal(failure) == "run r: the data's task has no metric 'mse'"
    retryable = ApplicationError("worker lost", type="Transient")
    other = WorkflowFailureError(cause=retryable)
    other.__cause__ = retryable
    assert refusal(other) is None


def test_a_coordinator_refusal_prints_one_line_and_exits_2(
    runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    import bert_eval.cli as cli
    import bert_eval.temporal.client as temporal_client
    import bert_eval.temporal.submit as submit

    async def connected(_temporal: object) -> object:
        return object()

    async def nothing(*_args: object, **_kwargs: object) -> object:
        return None

    class Handle:
        id = "bert-eval-coordinator-x"

    async def started(*_args: object, **_kwargs: object) -> Handle:
        return Handle()

    async def refused(*_args: object, **_kwargs: object) -> object:
        cause = ApplicationError(
            "invalid experiment: a [low, high] range\nover two lines", type="InvalidInput", non_retryable=True
        )
        failure = WorkflowFailureError(cause=cause)
        failure.__cause__ = cause
        raise failure

    monkeypatch.setattr(cli, "_connect_or_fail", connected)
    monkeypatch.setattr(temporal_client, "ensure_search_attributes", nothing)
    monkeypatch.setattr(submit, "start_experiment", started)
    monkeypatch.setattr(submit, "watch", refused)
    path = tmp_path / "experiment.yaml"
    path.write_text(f"runs:\n  - {RUN}")
    before = _tree(runs_dir)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: invalid experiment: a [low, high] range over two lines\n"
    assert _tree(runs_dir) == before


# --------------------------------------------------------------------------- one path rule for models


def test_model_paths_outside_the_roots_are_refused_alike_whether_or_not_they_exist(tmp_path: Path) -> None:
    runs, mirror = tmp_path / "runs-volume", tmp_path / "mirror"
    (runs / "runs").mkdir(parents=True)
    mirror.mkdir()
    (tmp_path / "outside").mkdir()
    messages = []
    for source in ("/etc", "/no/such/dir", str(tmp_path / "outside"), f"{mirror}/../outside", "../../etc"):
        with pytest.raises(InvalidInputError) as refused:
            check_model_roots(source, runs_dir=runs, models_dir=mirror)
        messages.append(str(refused.value).replace(repr(source[:200]), "SOURCE"))
        assert "config.json" not in str(refused.value) and "no model directory" not in str(refused.value)
    assert len(set(messages)) == 1, messages
    assert "outside the runs directory" in messages[0] and "models mirror" in messages[0]
    # Inside the roots, and names, pass on to the resolver.
    (mirror / "org" / "model").mkdir(parents=True)
    for source in (f"{mirror}/org/model", str(runs / "runs" / "x" / "model"), "org/model", "run:some-run"):
        check_model_roots(source, runs_dir=runs, models_dir=mirror)


def test_existing_relative_names_outside_the_roots_read_as_unknown_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "local").mkdir(parents=True)
    runs = tmp_path / "runs-volume"
    with pytest.raises(InvalidInputError) as exists:
        check_model_roots("org/local", runs_dir=runs, models_dir=None)
    assert "is not a run (`run:<RUN_ID>`), a local model directory" in str(exists.value)
    check_model_roots("org/absent", runs_dir=runs, models_dir=None)  # the resolver says the same for it


def test_extend_reads_the_recorded_runs_before_submitting(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(f"experiment_id: probe-base\nruns:\n  - {RUN}    run_id: other\n")
    before = _tree(runs_dir)
    result = CliRunner().invoke(app, ["run", str(path), "--no-wait", "--extend"])
    assert "extending experiment probe-base: 1 recorded run(s) kept, 1 from the file" in result.stderr
    assert "cannot reach Temporal" in result.stderr and result.exit_code == 2  # it got as far as submitting
    assert _tree(runs_dir) == before


def test_evaluating_a_run_that_never_trained_names_its_experiment(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text("runs:\n  - {run_id: ev, model: {run: kept}, dataset: glue/sst2, train: null}\n")
    _assert_refused(
        *_run_cli(runs_dir, path),
        "model: run kept is a run of experiment probe-base but never trained (it failed before training, or has not "
        "started): see `bert-eval status probe-base`",
    )
    path.write_text("runs:\n  - {run_id: ev, model: {run: nobody}, dataset: glue/sst2, train: null}\n")
    _assert_refused(*_run_cli(runs_dir, path), "run nobody: no such run")


# --------------------------------------------------------------------------- predict


def _predict_cli(runs_dir: Path, *args: str) -> tuple[int, str, float]:
    before = _tree(runs_dir)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["predict", "some-run", *args])
    elapsed = time.monotonic() - started
    assert _tree(runs_dir) == before, "the runs directory changed"
    return result.exit_code, result.stderr, elapsed


def test_a_predict_file_over_the_size_cap_is_refused_before_reading(runs_dir: Path, tmp_path: Path) -> None:
    from bert_eval.cli import PREDICT_MAX_FILE_BYTES

    path = tmp_path / "texts.txt"
    with open(path, "wb") as handle:  # sparse: 4 GiB that reading whole would exhaust the machine
        handle.write(b"a text\n")
        handle.seek(4 << 30)
        handle.write(b"\n")
    _assert_refused(*_predict_cli(runs_dir, "--file", str(path)), f"larger than {PREDICT_MAX_FILE_BYTES // 1024} KiB")


PREDICT_FILES = {
    # name: (file contents, text the one line must hold)
    "binary file": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 40, "not UTF-8 text (byte 0)"),
    "latin-1 file": ("a caf\u00e9 film\n".encode("latin-1"), "not UTF-8 text (byte 5); save it as UTF-8"),
    "NUL in a line": (b"fine\nbad\x00text\n", "texts.txt line 2 holds the control character U+0000"),
    "escape sequence": (b"\x1b[31mred\x1b[0m\n", "line 1 holds the control character U+001B"),
    "too many lines": (b"x\n" * 10_001, "10,001 texts: at most 10,000 per call"),
    "only blank lines": (b"\n  \n\t\n", "nothing to predict"),
    "a directory": (None, "cannot read"),
}


@pytest.mark.parametrize("name", list(PREDICT_FILES))
def test_a_hostile_predict_file_is_refused_in_one_line(name: str, runs_dir: Path, tmp_path: Path) -> None:
    content, expected = PREDICT_FILES[name]
    path = tmp_path / "texts.txt"
    path.mkdir() if content is None else path.write_bytes(content)
    _assert_refused(*_predict_cli(runs_dir, "--file", str(path)), expected)


def test_a_bad_predict_argument_is_refused_in_one_line(runs_dir: Path) -> None:
    _assert_refused(*_predict_cli(runs_dir, "fine", "bell\x07"), "text 2 holds the control character U+0007")
    before = _tree(runs_dir)
    result = CliRunner().invoke(app, ["predict", "../escape", "text"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert _tree(runs_dir) == before


@pytest.mark.parametrize(
    ("error_type", "message", "code"),
    [
        ("InvalidInput", "run no-such-run: no such run under /runs; check the id", 2),
        ("InvalidInput", "run pair: was trained on sentence pairs: give each text as 'first<TAB>second'", 2),
        ("DeterministicFailure", "run r: model weights unreadable (OSError)", 1),
    ],
)
def test_the_workers_refusal_of_a_prediction_prints_one_line_and_exits_2(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch, error_type: str, message: str, code: int
) -> None:
    """The worker refuses a run it does not hold (or texts the run cannot take) as bad input: exit 2, like
    `run`; a failure of the model itself stays exit 1."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ActivityError, ApplicationError, RetryState

    import bert_eval.cli as cli
    import bert_eval.temporal.submit as submit

    async def connected(_temporal: object) -> object:
        return object()

    async def refused(*_args: object, **_kwargs: object) -> object:
        cause = ApplicationError(message, type=error_type, non_retryable=True)
        activity_error = ActivityError(
            "activity error", scheduled_event_id=1, started_event_id=2, identity="w", activity_type="predict",
            activity_id="1", retry_state=RetryState.NON_RETRYABLE_FAILURE,
        )  # fmt: skip
        activity_error.__cause__ = cause
        failure = WorkflowFailureError(cause=activity_error)
        failure.__cause__ = activity_error
        raise failure

    monkeypatch.setattr(cli, "_connect_or_fail", connected)
    monkeypatch.setattr(submit, "predict", refused)
    code_seen, stderr, elapsed = _predict_cli(runs_dir, "a text")
    assert code_seen == code, stderr
    assert stderr == f"error: {message}\n"
    assert elapsed < REFUSAL_S
