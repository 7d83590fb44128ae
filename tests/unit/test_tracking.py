"""MLflow tracking, registry and export without a server: the experiment file's `tracking:`, `register:` and
`train.report_to`, the CLI's bad-input errors (one line, exit 2, nothing written), `bert-eval export` of a
finished run, and `train.report_to: [wandb]` writing W&B's offline run directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.core import core_snapshot
from support.ports import free_port
from support.specs import core_spec
from transformers import AutoConfig, AutoTokenizer
from typer.testing import CliRunner

from bert_eval.cli import app
from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.experiment import ExperimentFileError, parse_experiment
from bert_eval.spec import RunSpec

RUN = {"model": "prajjwal1/bert-tiny", "dataset": "glue/sst2"}


def _experiment(**top: object) -> dict:
    return {"runs": [dict(RUN)], **top}


# --------------------------------------------------------------------------- the experiment file


def test_tracking_and_register_are_read_and_kept_through_canonical_ids() -> None:
    experiment = parse_experiment(
        _experiment(
            tracking={"mlflow": {"uri": " http://mlflow:5000 ", "experiment": "team-sst2"}},
            register={"mlflow": {"name": "sst2-classifier"}},
        )
    )
    assert experiment.tracking is not None and experiment.tracking.mlflow.uri == "http://mlflow:5000"
    assert experiment.tracking.mlflow.experiment == "team-sst2"
    assert experiment.registry is not None and (experiment.registry.mlflow.name, experiment.registry.mlflow.alias) == (
        "sst2-classifier",
        "champion",
    )
    # The payload the coordinator receives parses back to the same experiment.
    assert type(experiment).model_validate(experiment.model_dump(mode="json")) == experiment


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        (
            {"tracking": {"mlflow": {"uri": "mlflow-server:5000"}}},
            "tracking.mlflow.uri 'mlflow-server:5000': not a tracking URI",
        ),
        ({"tracking": {"mlflow": {"uri": "http://"}}}, "an http(s) URI needs a host"),
        ({"tracking": {"mlflow": {"url": "http://x:5000"}}}, "tracking.mlflow.url"),
        ({"register": {"mlflow": {"name": "m"}}}, "register: the model registry is MLflow's; add tracking:"),
        ({"register": {"mlflow": {"alias": "champion"}}, "tracking": {"mlflow": {}}}, "register.mlflow.name"),
    ],
)
def test_bad_tracking_sections_name_the_field(top: dict, expected: str) -> None:
    with pytest.raises(ExperimentFileError) as raised:
        parse_experiment(_experiment(**top))
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_register_needs_a_configuration_that_trains() -> None:
    eval_only = {**RUN, "train": None}
    with pytest.raises(ExperimentFileError, match="register: no configuration to choose a winner from"):
        parse_experiment({"runs": [eval_only], "tracking": {"mlflow": {}}, "register": {"mlflow": {"name": "m"}}})


def test_report_to_is_checked_and_left_out_of_the_fingerprint() -> None:
    plain = RunSpec.model_validate({**RUN, "run_id": "r"})
    reporting = RunSpec.model_validate({**RUN, "run_id": "r", "train": {"report_to": ["wandb", "tensorboard"]}})
    assert reporting.train.report_to == ("wandb", "tensorboard")
    assert reporting.fingerprint() == plain.fingerprint()
    assert RunSpec.model_validate({**RUN, "train": {"report_to": "none"}}).train.report_to == ()
    with pytest.raises(ValueError, match="report_to: 'weights-and-biases' is not an integration of the Trainer"):
        RunSpec.model_validate({**RUN, "train": {"report_to": ["weights-and-biases"]}})


# --------------------------------------------------------------------------- CLI bad input


def _write(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def test_run_with_an_unreachable_tracking_server_exits_2_before_submitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BERT_EVAL_RUNS_DIR", str(tmp_path / "runs"))
    # A Temporal address nobody serves: the command must stop before it tries to connect.
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    uri = f"http://127.0.0.1:{free_port()}"
    file = _write(tmp_path / "exp.yaml", _experiment(tracking={"mlflow": {"uri": uri}}))
    result = CliRunner().invoke(app, ["run", str(file)])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert f"tracking.mlflow.uri {uri}: the MLflow server does not answer" in line
    assert not (tmp_path / "runs").exists()


def test_run_without_a_tracking_uri_anywhere_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BERT_EVAL_RUNS_DIR", str(tmp_path / "runs"))
    file = _write(tmp_path / "exp.yaml", _experiment(tracking={"mlflow": {}}))
    result = CliRunner().invoke(app, ["run", str(file)])
    assert result.exit_code == 2 and "tracking.mlflow.uri: not set" in result.output


def test_run_with_a_malformed_uri_from_the_environment_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://mlflow")
    monkeypatch.setenv("BERT_EVAL_RUNS_DIR", str(tmp_path / "runs"))
    result = CliRunner().invoke(app, ["run", str(_write(tmp_path / "exp.yaml", _experiment()))])
    assert result.exit_code == 2 and "tracking.mlflow.uri 'ftp://mlflow': not a tracking URI" in result.output


def test_export_of_an_unfinished_run_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    (runs_dir / "runs" / "half-done").mkdir(parents=True)
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", "half-done", str(out), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 2 and "run half-done: has not finished" in result.output and not out.exists()


def test_push_to_hub_without_a_token_exits_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    out = tmp_path / "export"
    result = CliRunner().invoke(
        app, ["export", "any-run", str(out), "--push-to-hub", "team/sst2", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--push-to-hub team/sst2: no Hugging Face token configured" in result.output
    assert not out.exists()


# --------------------------------------------------------------------------- a finished run


@pytest.fixture(scope="module")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_dir: Path
) -> tuple[Path, RunSpec]:
    runs_dir = tmp_path_factory.mktemp("runs")
    spec = core_spec(tiny_model_dir, "finished", epochs=1)
    snapshot = core_snapshot(spec, runs_dir, data_dir)
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    evaluate(
        run_id=spec.id, model_dir=summary.model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=runs_dir
    )
    return runs_dir, spec


def test_export_writes_a_model_folder_with_a_model_card(finished_run: tuple[Path, RunSpec], tmp_path: Path) -> None:
    runs_dir, spec = finished_run
    out = tmp_path / "sst2-model"
    result = CliRunner().invoke(app, ["export", spec.id, str(out), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    config = AutoConfig.from_pretrained(out)
    assert sorted(config.id2label.values()) == ["0", "1"]
    assert AutoTokenizer.from_pretrained(out).model_max_length == spec.train.max_seq_length
    assert (out / "model.safetensors").is_file()
    card = (out / "README.md").read_text()
    evaluation = json.loads((runs_dir / "runs" / spec.id / "eval-validation.json").read_text())
    assert f"base_model: {spec.model}" in card and "glue/sst2" in card
    assert f"seed {spec.train.seed}" in card and f"{spec.train.max_train_samples} training rows" in card
    assert f"| validation | accuracy | {evaluation['metrics']['accuracy']:.4f} |" in card
    assert f"| learning_rate | {spec.train.learning_rate} |" in card
    # Exporting into a directory that holds files is refused, and leaves it as it was.
    again = CliRunner().invoke(app, ["export", spec.id, str(out), "--runs-dir", str(runs_dir)])
    assert again.exit_code == 2 and "exists and is not an empty directory" in again.output


def test_report_to_wandb_writes_an_offline_run(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_PROJECT", "bert-eval-test")
    (tmp_path / "wandb-dir").mkdir()
    spec = core_spec(tiny_model_dir, "reports-to-wandb", epochs=1, report_to=["wandb"], logging_steps=2)
    runs_dir = tmp_path / "runs"
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=core_snapshot(spec, runs_dir, data_dir), runs_dir=runs_dir))
    wandb = pytest.importorskip("wandb")
    wandb.finish()  # the Trainer's callback leaves the run open; finishing it flushes the run file
    [run_dir] = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    [run_file] = run_dir.glob("run-*.wandb")
    # The offline run file holds the Trainer's arguments (the run's hyperparameters) and its final metrics
    # (written by W&B's own service process, which may finish writing just after `finish` returns).
    keys = (b"per_device_train_batch_size", b"learning_rate", b"train/global_step", b"train_loss")
    deadline = time.monotonic() + 60
    while [k for k in keys if k not in run_file.read_bytes()] and time.monotonic() < deadline:
        time.sleep(0.5)
    missing = [k for k in keys if k not in run_file.read_bytes()]
    assert not missing, f"{missing} not in the W&B run file {run_file}"
    # The run's own results are unchanged by reporting (report_to is not part of what is computed).
    plain = core_spec(tiny_model_dir, "reports-nowhere", epochs=1, logging_steps=2)
    other = fine_tune(
        FineTuneRequest(
            run=plain, snapshot=core_snapshot(plain, tmp_path / "runs2", data_dir), runs_dir=tmp_path / "runs2"
        )
    )
    assert summary.final_loss == other.final_loss


# --------------------------------------------------------------------------- the logging activity


def test_an_unreachable_server_is_a_retryable_failure_recorded_for_status(tmp_path: Path) -> None:
    import asyncio

    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from bert_eval.temporal.names import TRANSIENT_FAILURE
    from bert_eval.temporal.tracking_activities import TrackingActivities, TrackingInput

    uri = f"http://127.0.0.1:{free_port()}"
    activities = TrackingActivities(runs_dir=tmp_path)
    with pytest.raises(ApplicationError) as raised:
        asyncio.run(ActivityEnvironment().run(activities.log_to_mlflow, TrackingInput(experiment_id="exp-a", uri=uri)))
    assert raised.value.type == TRANSIENT_FAILURE and not raised.value.non_retryable
    assert f"experiment exp-a: MLflow logging to {uri} failed" in str(raised.value)
    record = json.loads((tmp_path / "experiments" / "exp-a.mlflow.json").read_text())
    assert record["state"] == "unreachable" and record["uri"] == uri and "does not answer" in record["error"]


def test_no_tracking_uri_anywhere_fails_the_activity_without_retrying(tmp_path: Path) -> None:
    import asyncio

    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from bert_eval.temporal.tracking_activities import TrackingActivities, TrackingInput

    with pytest.raises(ApplicationError) as raised:
        asyncio.run(
            ActivityEnvironment().run(
                TrackingActivities(runs_dir=tmp_path).log_to_mlflow, TrackingInput(experiment_id="exp-a")
            )
        )
    assert raised.value.non_retryable and "tracking.mlflow.uri: not set" in str(raised.value)
