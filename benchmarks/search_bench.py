"""The search rows of `make bench` (`bench.py --only search`): ASHA's quality and compute against the full
search, then one hyperparameter search measured against Optuna two ways.

Every row runs both sides in the same `bench.py` run, on the same model, SST-2 rows, space, trial count and
seed; every number printed is measured here.

  ASHA vs full search  one full random search recorded rung by rung, ASHA (the search's own ladder) and
                       Optuna's SuccessiveHalvingPruner replayed on it over many trial subsets, arrival
                       orders and slice resamples (search_replay.py): regret in validation accuracy with
                       its interval, training steps and seconds against the full search; the fixed cost
                       per training call F; and a live bert-eval ASHA search of the same trials, which
                       must make the replay's decisions.
  vs Optuna            bert-eval (dev server, one training worker, max_concurrent 1) vs Optuna run standalone
                       in this process: `TPESampler` + `SuccessiveHalvingPruner` over the same
                       `fine_tune(stop_at_step=...)` + `evaluate_rung` calls. Best objective, wall time, and the
                       controller overhead: the share of the wall time with no training or evaluation running.
  kill survival        Optuna on SQLite in a subprocess, SIGKILLed once during a trial's last rung and
                       restarted to finish the trial count, vs bert-eval with its eval worker and its
                       training worker each SIGKILLed once (a replacement started after each): trials lost,
                       work done again, training seconds wasted.

`python benchmarks/search_bench.py optuna --document F --runs-dir D --storage URL` runs one Optuna search
(the kill row's subprocess). `python benchmarks/search_bench.py replay [--sizes cpu|small|mini] [--no-live]` prints the
ASHA-vs-full rows alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("BERT_EVAL_LOG_LEVEL", "WARNING")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState as OptunaState  # noqa: E402

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot  # noqa: E402
from bert_eval.core.evaluation.batched import evaluate  # noqa: E402
from bert_eval.core.search.rungs import evaluate_rung, keep_last_checkpoint  # noqa: E402
from bert_eval.core.search.sampling import optuna_distribution  # noqa: E402
from bert_eval.core.storage.journal import RunJournal  # noqa: E402
from bert_eval.core.storage.layout import RunLayout  # noqa: E402
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune  # noqa: E402
from bert_eval.experiment import parse_experiment  # noqa: E402
from bert_eval.search import max_steps, rung_steps, search_holdout, trial_id, trial_spec  # noqa: E402
from bert_eval.spec import Experiment, RunSpec  # noqa: E402
from bert_eval.telemetry import configure_logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paced_worker import PACE_ENV  # noqa: E402
from search_replay import (  # noqa: E402
    REPLAY_CPU,
    REPLAY_MINI,
    REPLAY_SMALL,
    ReplaySizes,
    curves_from_record,
    fixed_cost,
    live_matches,
    record_curves,
    replay,
    replay_document,
)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SPACE = {"train.learning_rate": {"loguniform": [1.0e-5, 3.0e-4]}, "train.warmup_ratio": {"uniform": [0.0, 0.2]}}


@dataclass(frozen=True)
class SearchSizes:
    model: str  # "minilm" (pretrained, offline) or "tiny" (2-layer random BERT)
    trials: int
    train_rows: int  # selected SST-2 training rows, the search slice included
    holdout: float
    batch_size: int
    max_seq_length: int
    min_steps: int
    reduction_factor: int
    eval_rows: int | None  # the final evaluation's validation rows (None: all 872)
    kill_delay_s: float  # how far into a trial's last rung of training the kill lands
    step_pace_s: float = 0.0  # kill row only: each step lasts at least this long (tiny steps are milliseconds)


# 540 training rows at batch 16: 34 steps a trial, rungs at 4, 12 and 34 steps; a 60-row search slice.
SEARCH_CPU = SearchSizes(
    model="minilm", trials=12, train_rows=600, holdout=0.1, batch_size=16, max_seq_length=32, min_steps=4,
    reduction_factor=3, eval_rows=None, kill_delay_s=1.0,
)  # fmt: skip
# 160 training rows: 10 steps a trial, rungs at 2, 6 and 10; the kill row paces steps at 0.1 s.
SEARCH_QUICK = SearchSizes(
    model="tiny", trials=4, train_rows=200, holdout=0.2, batch_size=16, max_seq_length=32, min_steps=2,
    reduction_factor=3, eval_rows=64, kill_delay_s=0.2, step_pace_s=0.1,
)  # fmt: skip


def search_document(sizes: SearchSizes, model: str, experiment_id: str, *, scheduler: str = "asha") -> dict[str, Any]:
    """The experiment file of the search, both sides: max_concurrent 1, so bert-eval trains one rung at a time."""
    return {
        "experiment_id": experiment_id,
        "defaults": {
            "model": model,
            "dataset": "glue/sst2",
            "train": {
                "epochs": 1,
                "batch_size": sizes.batch_size,
                "max_seq_length": sizes.max_seq_length,
                "max_train_samples": sizes.train_rows,
                "seed": 1,
            },
            "eval": {"split": "validation", "max_eval_samples": sizes.eval_rows},
        },
        "search": {
            "space": SPACE,
            "sampler": "tpe",
            "trials": sizes.trials,
            "max_concurrent": 1,
            "seed": 0,
            "objective": {"metric": "accuracy", "mode": "max", "split": "search", "holdout": sizes.holdout},
            "scheduler": {"type": "asha", "min_steps": sizes.min_steps, "reduction_factor": sizes.reduction_factor}
            if scheduler == "asha" else {"type": "none"},
        },
    }  # fmt: skip


@dataclass
class SearchRun:
    """One search as measured, either side."""

    wall_s: float
    best: float | None  # the winner's objective on the search slice
    best_trial: int | None
    final_metrics: dict[str, float] | None  # the winner's metrics on the eval split
    train_s: float  # training calls, summed over trials and rungs
    eval_s: float  # rung and final evaluations, summed
    busy_s: float  # wall time during which a training or an evaluation call was running
    training_calls: int  # fine_tune calls (one per rung trained)
    trials: list[dict[str, Any]]

    @property
    def overhead(self) -> float:
        """The share of the wall time during which no training or evaluation call was running."""
        return (self.wall_s - self.busy_s) / self.wall_s

    @property
    def overhead_of_sums(self) -> float:
        """The wall time beyond the calls' summed seconds, as a share: below `overhead` (even negative) when
        calls overlap, as bert-eval's rung evaluations overlap the next rung's training."""
        return (self.wall_s - self.train_s - self.eval_s) / self.wall_s


# ---------------------------------------------------------------- bert-eval's side


def run_bert_eval(stack: Any, document: dict[str, Any], **kwargs: Any) -> tuple[SearchRun, Any]:
    """Submit the search to the stack and wait; (measured, the SearchOutcome)."""
    started = time.monotonic()
    result = stack.run_experiment(document, timeout_s=3600, **kwargs)
    return measured_bert_eval(result.search, time.monotonic() - started, stack.runs_dir), result.search


def measured_bert_eval(outcome: Any, wall_s: float, runs_dir: Path) -> SearchRun:
    best = next((t for t in outcome.trials if t.run_id == outcome.best), None)
    return SearchRun(
        wall_s=wall_s,
        best=best.objective if best else None,
        best_trial=best.trial if best else None,
        final_metrics=best.metrics if best else None,
        train_s=sum(t.train_seconds for t in outcome.trials),
        eval_s=sum(evaluation_seconds(runs_dir, t.run_id) for t in outcome.trials),
        busy_s=busy_seconds(runs_dir, [t.run_id for t in outcome.trials]),
        training_calls=sum(RunLayout(runs_dir, t.run_id).journal.fine_tune_calls() for t in outcome.trials),
        trials=[
            {
                "trial": t.trial,
                "params": t.params,
                "state": t.state.value,
                "steps": t.steps,
                "objectives": t.objectives,
                "train_s": t.train_seconds,
            }
            for t in outcome.trials
        ],
    )


def evaluation_seconds(runs_dir: Path, run_id: str) -> float:
    return sum(end - start for start, end in evaluation_intervals(runs_dir, run_id))


def evaluation_intervals(runs_dir: Path, run_id: str) -> list[tuple[float, float]]:
    """A trial's rung evaluations (`rungs/step-N.json`) and final evaluation (`eval-validation.json`): each
    ends when its result file was written and lasted the seconds it records."""
    layout = RunLayout(runs_dir, run_id)
    results = [(p, json.loads(p.read_text())["seconds"]) for p in (layout.root / "rungs").glob("step-*.json")]
    if (final := layout.eval_file("validation")).is_file():
        results.append((final, json.loads(final.read_text())["duration_s"]))
    return [(p.stat().st_mtime - seconds, p.stat().st_mtime) for p, seconds in results]


def busy_seconds(runs_dir: Path, run_ids: list[str]) -> float:
    """Wall time during which a training or an evaluation call of these trials was running (their union)."""
    intervals = [
        i
        for run_id in run_ids
        for i in training_intervals(journal(runs_dir, run_id)) + evaluation_intervals(runs_dir, run_id)
    ]
    total, covered = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > covered:
            total, covered = total + end - max(start, covered), end
    return total


def journal(runs_dir: Path, run_id: str) -> list[dict[str, Any]]:
    return RunLayout(runs_dir, run_id).journal.read()


# ---------------------------------------------------------------- Optuna standalone


def optuna_search(
    document: dict[str, Any], *, runs_dir: Path, data_dir: Path, storage: str | None = None
) -> optuna.Study:
    """The search as one process runs it with Optuna: TPE, successive halving at bert-eval's rungs, the same
    training and evaluation calls. With `storage`, a restarted process carries on until the trial count is
    reached (a trial killed mid-way stays RUNNING in the storage)."""
    experiment = parse_experiment(document)
    search = experiment.search
    assert search is not None
    template = experiment.runs[0].model_copy(update={"holdout": search_holdout(search)})
    snapshot = create_snapshot(SnapshotInput.for_run(template), runs_dir=runs_dir, data_dir=data_dir)
    study = optuna.create_study(
        study_name=experiment.id,
        storage=storage,
        load_if_exists=True,
        direction="maximize" if search.objective.maximize else "minimize",
        sampler=optuna.samplers.TPESampler(seed=search.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=search.scheduler.min_steps,
            reduction_factor=search.scheduler.reduction_factor,
            min_early_stopping_rate=0,
        ),
    )
    while sum(t.state in (OptunaState.COMPLETE, OptunaState.PRUNED) for t in study.trials) < search.trials:
        optuna_trial(study, experiment, template, snapshot, runs_dir)
    return study


def optuna_trial(study: optuna.Study, experiment: Experiment, template: RunSpec, snapshot: Any, runs_dir: Path) -> None:
    """One trial: rung by rung, each resumed from the previous rung's checkpoint, pruned as the pruner says."""
    search = experiment.search
    assert search is not None
    # The Optuna distributions bert-eval's sampler uses, so both sides search the same space.
    trial = study.ask({path: optuna_distribution(d) for path, d in search.space.items()})
    spec = trial_spec(template, trial.params, run_id=trial_id(experiment.id, trial.number), holdout=template.holdout)
    rungs = rung_steps(search.scheduler, max_steps(spec.train, snapshot.splits["train"]))
    train_s = eval_s = 0.0
    for step in rungs:
        final = step == rungs[-1]
        summary = fine_tune(
            FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, stop_at_step=None if final else step)
        )
        rung = evaluate_rung(spec, step, model_dir=summary.model_dir, snapshot=snapshot, runs_dir=runs_dir)
        train_s, eval_s = train_s + (summary.call_seconds or 0.0), eval_s + rung.seconds
        trial.report(rung.metrics[search.objective.metric], step)
        if not final and trial.should_prune():
            keep_last_checkpoint(spec.id, runs_dir=runs_dir)  # as bert-eval does for a stopped trial
            _set_attrs(trial, train_s=train_s, eval_s=eval_s, steps=step)
            study.tell(trial, state=OptunaState.PRUNED)
            return
    result = evaluate(
        run_id=spec.id, model_dir=summary.model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=runs_dir
    )
    _set_attrs(trial, train_s=train_s, eval_s=eval_s + result.duration_s, steps=step, metrics=result.metrics)
    study.tell(trial, rung.metrics[search.objective.metric])


def _set_attrs(trial: optuna.Trial, **attrs: Any) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def measured_optuna(study: optuna.Study, wall_s: float, runs_dir: Path) -> SearchRun:
    done = [t for t in study.trials if t.state in (OptunaState.COMPLETE, OptunaState.PRUNED)]
    best = study.best_trial if any(t.state is OptunaState.COMPLETE for t in done) else None
    return SearchRun(
        wall_s=wall_s,
        best=best.value if best else None,
        best_trial=best.number if best else None,
        final_metrics=best.user_attrs.get("metrics") if best else None,
        train_s=sum(t.user_attrs["train_s"] for t in done),
        eval_s=sum(t.user_attrs["eval_s"] for t in done),
        busy_s=busy_seconds(runs_dir, [trial_id(study.study_name, t.number) for t in study.trials]),
        training_calls=sum(len(t.intermediate_values) for t in done),
        trials=[
            {"trial": t.number, "params": t.params, "state": t.state.name.lower(), "steps": t.user_attrs.get("steps"),
             "objectives": list(t.intermediate_values.values()), "train_s": t.user_attrs.get("train_s")}
            for t in study.trials
        ],
    )  # fmt: skip


def warm_up(document: dict[str, Any], runs_dir: Path, data_dir: Path) -> None:
    """One rung of one trial in this process, so the timed search does not pay for its first model load and
    kernels (the workers had the full search for that)."""
    experiment = parse_experiment(document)
    assert experiment.search is not None
    template = experiment.runs[0].model_copy(update={"holdout": search_holdout(experiment.search)})
    snapshot = create_snapshot(SnapshotInput.for_run(template), runs_dir=runs_dir, data_dir=data_dir)
    spec = trial_spec(template, {}, run_id="warm-up", holdout=template.holdout)
    step = experiment.search.scheduler.min_steps
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, stop_at_step=step))
    evaluate_rung(spec, step, model_dir=summary.model_dir, snapshot=snapshot, runs_dir=runs_dir)


# ---------------------------------------------------------------- kills


@dataclass
class Kill:
    target: str
    run_id: str | None  # the trial training when it landed
    at: float  # time.time()
    mid_training: bool  # the trial's rung had not ended when the kill landed


def wait_for(condition: Callable[[], Any], *, timeout_s: float, poll_s: float = 0.05) -> Any:
    """The condition's first truthy value, or None after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll_s)
    return None


def last_rung_training(runs_dir: Path, prefix: str, from_step: int) -> str | None:
    """The trial training its last rung now: resumed from `from_step` by a first attempt, nothing recorded since."""
    for file in runs_dir.glob(f"runs/{prefix}*/events.jsonl"):
        events = RunJournal(file).read()
        if (
            events
            and events[-1]["event"] == "resume"
            and events[-1].get("from_step") == from_step
            and events[-1].get("attempt") == 1
        ):
            return file.parent.name
    return None


def rung_training(runs_dir: Path, prefix: str) -> str | None:
    """A trial whose rung training has started and not ended."""
    for file in runs_dir.glob(f"runs/{prefix}*/events.jsonl"):
        events = RunJournal(file).read()
        if events and events[-1]["event"] in ("attempt", "resume"):
            return file.parent.name
    return None


def kill_when(
    target: str, find: Callable[[], str | None], kill: Callable[[], None], runs_dir: Path, *, delay_s: float
) -> Kill | None:
    """Kill `delay_s` after `find` names a trial in training; None if none was found within 10 minutes."""
    run_id = wait_for(find, timeout_s=600)
    if run_id is None:
        return None
    time.sleep(delay_s)
    kill()
    at = time.time()
    events = journal(runs_dir, run_id)
    started = max(i for i, e in enumerate(events) if e["event"] in ("attempt", "resume") and e["time"] <= at)
    ended = any(e["event"] in ("paused", "completed") and e["time"] <= at for e in events[started:])
    return Kill(target=target, run_id=run_id, at=at, mid_training=not ended)


def seconds_since_last_save(events: list[dict[str, Any]], at: float) -> float:
    """Training time an attempt killed at `at` loses: since its start or its newest checkpoint."""
    saved = [e["time"] for e in events if e["event"] in ("attempt", "checkpoint") and e["time"] <= at]
    return at - max(saved) if saved else 0.0


def training_intervals(events: list[dict[str, Any]], until: float | None = None) -> list[tuple[float, float]]:
    """The fine_tune calls in a journal, each from its attempt to its pause or completion; with `until`, only
    what happened before it, a call still running then ending there."""
    intervals, started = [], None
    for e in events:
        if until is not None and e["time"] > until:
            break
        if e["event"] == "attempt":
            started = e["time"]
        elif e["event"] in ("paused", "completed") and started is not None:
            intervals.append((started, e["time"]))
            started = None
    if until is not None and started is not None:
        intervals.append((started, until))
    return intervals


def training_seconds(events: list[dict[str, Any]], until: float) -> float:
    """Time spent in fine_tune calls up to `until`."""
    return sum(end - start for start, end in training_intervals(events, until))


def kill_bert_eval(
    stack: Any, document: dict[str, Any], sizes: SearchSizes, rungs: list[int]
) -> tuple[SearchRun, Any, list[Kill]]:
    """The search with the eval worker SIGKILLed once while a rung trains (after two rungs were measured) and the
    training worker SIGKILLed once, `kill_delay_s` into a trial's last rung; a replacement started after each."""
    runs_dir, prefix = stack.runs_dir, document["experiment_id"]
    options = {"eval": {"BERT_EVAL_EVAL_CONCURRENCY": "8"}, "training": {"step_pace_s": sizes.step_pace_s}}
    if sizes.step_pace_s:  # a paced training worker in place of bench.stack()'s
        for worker in [w for w in stack.workers if w.kind == "training"]:
            worker.terminate()
            stack.workers.remove(worker)
        stack.start_worker("training", **options["training"])
    measured = lambda: len(list(runs_dir.glob(f"runs/{prefix}*/rungs/step-*.json")))  # noqa: E731
    started = time.monotonic()
    background = stack.run_in_background(document, heartbeat_timeout_s=5, timeout_s=3600)
    kills = []
    wait_for(lambda: measured() >= 2, timeout_s=600)
    for target, find, delay in (
        ("eval", lambda: rung_training(runs_dir, prefix), 0.0),
        ("training", lambda: last_rung_training(runs_dir, prefix, rungs[-2]), sizes.kill_delay_s),
    ):
        [worker] = [w for w in stack.workers if w.kind == target and w.process.poll() is None]
        if (kill := kill_when(target, find, worker.kill, runs_dir, delay_s=delay)) is not None:
            kills.append(kill)
            stack.start_worker(target, wait=False, **options[target])
    result = background.result(timeout_s=3600)
    return measured_bert_eval(result.search, time.monotonic() - started, runs_dir), result.search, kills


def kill_optuna(
    document: dict[str, Any], work: Path, data_dir: Path, sizes: SearchSizes, rungs: list[int]
) -> dict[str, Any]:
    """Optuna on SQLite in a subprocess, SIGKILLed `kill_delay_s` into a trial's last rung, then restarted."""
    runs_dir, storage = work / "runs", f"sqlite:///{work / 'optuna.db'}"
    (work / "document.json").write_text(json.dumps(document))
    command = [sys.executable, __file__, "optuna", "--document", str(work / "document.json"),
               "--runs-dir", str(runs_dir), "--data-dir", str(data_dir), "--storage", storage]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "services"), os.environ.get("PYTHONPATH", "")])}
    if sizes.step_pace_s:
        env[PACE_ENV] = str(sizes.step_pace_s)
    started = time.monotonic()
    with open(work / "optuna.log", "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        kill = kill_when(
            "optuna", lambda: last_rung_training(runs_dir, document["experiment_id"], rungs[-2]),
            lambda: (process.send_signal(signal.SIGKILL), process.wait(timeout=30)), runs_dir,
            delay_s=sizes.kill_delay_s,
        )  # fmt: skip
        process.wait(timeout=3600)
        restarted = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False)
    wall = time.monotonic() - started
    if restarted.returncode != 0:
        raise RuntimeError(f"the restarted Optuna search exited with {restarted.returncode}; see {work / 'optuna.log'}")
    study = optuna.load_study(study_name=document["experiment_id"], storage=storage)
    return {"study": study, "wall_s": wall, "kill": kill, "runs_dir": runs_dir}


def optuna_losses(study: optuna.Study, kill: Kill | None, runs_dir: Path, wanted: int) -> dict[str, Any]:
    """Trials left RUNNING, trials sampled again with the same params, the extra trials run to reach the count,
    and the training the lost trials had done."""
    lost = [t for t in study.trials if t.state is OptunaState.RUNNING]
    seen: list[dict[str, Any]] = []
    repeated = 0
    for t in study.trials:
        repeated += t.params in seen
        seen.append(t.params)
    wasted = (
        sum(training_seconds(journal(runs_dir, trial_id(study.study_name, t.number)), kill.at) for t in lost)
        if kill
        else 0.0
    )
    return {
        "trials_lost": len(lost),
        "lost_trials": [t.number for t in lost],
        "trials_repeated": repeated,
        "trials_started": len(study.trials),
        "replacement_trials": len(study.trials) - wanted,
        "wasted_training_s": wasted,
    }


def bert_eval_losses(outcome: Any, kills: list[Kill], runs_dir: Path, wanted: int) -> dict[str, Any]:
    """Trials lost, rungs trained twice (fine_tune calls beyond one per rung reached), retried attempts, the
    steps the resumed attempts report lost, and the training the killed attempt had done since its last save."""
    kept = [t for t in outcome.trials if t.state.value in ("completed", "stopped")]
    events = {t.run_id: journal(runs_dir, t.run_id) for t in outcome.trials}
    training_kill = next((k for k in kills if k.target == "training"), None)
    return {
        "trials_lost": wanted - len(kept),
        "rungs_trained_twice": sum(
            max(RunLayout(runs_dir, t.run_id).journal.fine_tune_calls() - (t.rung + 1), 0) for t in outcome.trials
        ),
        "retried_attempts": sum(
            1 for es in events.values() for e in es if e["event"] == "attempt" and e.get("attempt", 1) > 1
        ),
        "steps_lost": sum(e.get("steps_lost") or 0 for es in events.values() for e in es if e["event"] == "resume"),
        "wasted_training_s": seconds_since_last_save(events[training_kill.run_id], training_kill.at)
        if training_kill
        else 0.0,
    }


async def retried_evaluations(stack: Any, experiment_id: str) -> int:
    """Evaluation activities of the search started more than once (their worker killed mid-way)."""
    from bert_eval.temporal.history import activity_attempts
    from bert_eval.temporal.names import ACTIVITY, coordinator_workflow_id

    client = await stack.client()
    attempts = []
    for name in (ACTIVITY.evaluate_rung, ACTIVITY.evaluate_model):
        attempts += await activity_attempts(client, coordinator_workflow_id(experiment_id), name)
    return sum(a > 1 for a in attempts)


def same_decisions(a: Any, b: Any) -> bool:
    """The same trials, objectives, states, promotions and winner (bert-eval's run ids differ by experiment)."""

    def key(o: Any) -> Any:
        return (
            [(t.params, t.objectives, t.state) for t in o.trials],
            o.promotions,
            [t.trial for t in o.trials if t.run_id == o.best],
        )

    return key(a) == key(b)


# ---------------------------------------------------------------- the rows


def measure(bench: Any, *, quick: bool) -> Iterator[dict[str, Any]]:
    """The search rows, as `Row` fields, each yielded as soon as it is measured; details go to bench.raw."""
    sizes = SEARCH_QUICK if quick else SEARCH_CPU
    # The Optuna side calls the core in this process: its per-step logs at the level bench.py gives the workers.
    configure_logging(level=os.environ["BERT_EVAL_LOG_LEVEL"])
    model = MINILM if sizes.model == "minilm" else str(bench.tiny_model())
    label = "MiniLM-L6 (pretrained)" if sizes.model == "minilm" else "tiny random BERT"
    started = time.monotonic()
    if not quick:
        yield from replay_rows(bench, REPLAY_CPU, model, label, live=True)
    stack = bench.stack("search")
    try:
        asha, asha_outcome = run_bert_eval(stack, search_document(sizes, model, "search-asha"))
        rungs = asha_outcome.rungs
        slice_rows = round(sizes.train_rows * sizes.holdout)
        bench.raw["search.sizes"] = {
            **asdict(sizes),
            "model_id": model,
            "rungs": rungs,
            "search_slice_rows": slice_rows,
        }
        bench.raw["search.asha"] = _raw(asha)

        warm_up(search_document(sizes, model, "warm-up"), bench.fresh("search-warm-up"), bench.data_dir)
        gc.collect()
        gc.freeze()  # as the workers do with their start-up heap (bench.py's coordinator row does the same)
        optuna_started = time.monotonic()
        optuna_dir = bench.fresh("search-optuna")
        study = optuna_search(
            search_document(sizes, model, "search-optuna"), runs_dir=optuna_dir, data_dir=bench.data_dir
        )
        optuna_run = measured_optuna(study, time.monotonic() - optuna_started, optuna_dir)
        bench.raw["search.optuna"] = _raw(optuna_run)
        yield from versus_optuna(asha, optuna_run, sizes, label)

        ours = bert_eval_kill_survival(stack, search_document(sizes, model, "search-asha-killed"), sizes, asha_outcome)
    finally:
        stack.close()
    theirs = optuna_kill_survival(
        search_document(sizes, model, "search-optuna-killed"),
        bench.fresh("search-optuna-killed"),
        bench.data_dir,
        sizes,
        rungs,
    )
    bench.raw["search.kills"] = {"bert_eval": ours, "optuna_sqlite": theirs}
    yield from kill_survival(ours, theirs)
    bench.raw["search.wall_s"] = time.monotonic() - started


def bert_eval_kill_survival(
    stack: Any, document: dict[str, Any], sizes: SearchSizes, undisturbed: Any
) -> dict[str, Any]:
    killed, outcome, kills = kill_bert_eval(stack, document, sizes, undisturbed.rungs)
    return {
        **bert_eval_losses(outcome, kills, stack.runs_dir, sizes.trials),
        "evaluations_retried": asyncio.run(retried_evaluations(stack, document["experiment_id"])),
        "same_decisions_as_undisturbed": same_decisions(outcome, undisturbed),
        "kills": [asdict(k) for k in kills],
        "wall_s": killed.wall_s,
        "best": killed.best,
    }


def optuna_kill_survival(
    document: dict[str, Any], work: Path, data_dir: Path, sizes: SearchSizes, rungs: list[int]
) -> dict[str, Any]:
    killed = kill_optuna(document, work, data_dir, sizes, rungs)
    return {
        **optuna_losses(killed["study"], killed["kill"], killed["runs_dir"], sizes.trials),
        "kills": [asdict(killed["kill"])] if killed["kill"] else [],
        "wall_s": killed["wall_s"],
        "best": measured_optuna(killed["study"], killed["wall_s"], killed["runs_dir"]).best,
    }


def replay_rows(
    bench: Any, sizes: ReplaySizes, model: str, label: str, *, live: bool, recorded: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """The ASHA-vs-full rows (search_replay.py): record, replay, and (`live`) one live ASHA search.
    `recorded`: an earlier recording's raw figures (`search.replay`), its runs under the work directory's
    search-replay-runs: replayed again without training."""
    document = replay_document(sizes, model, "search-replay")
    started = time.monotonic()
    if recorded is None:
        curves = record_curves(document, bench.fresh("search-replay-runs"), bench.data_dir)
        record_s = time.monotonic() - started
    else:
        curves, record_s = curves_from_record(bench.work / "search-replay-runs", recorded), recorded["record_s"]
    summary = replay(curves, sizes)
    fixed, per_step = fixed_cost(curves.calls)
    rungs = curves.trials[0].steps
    setup = (
        f"{label}, {sizes.trials} random trials recorded ({record_s:.0f} s), {sizes.replicates} replays of "
        f"{sizes.subset} in random order with the {sizes.slice_rows}-row slice resampled; rungs {rungs}, "
        f"{sizes.train_rows} training rows"
    )
    bench.raw["search.replay"] = {
        "sizes": asdict(sizes),
        "summary": summary,
        "record_s": record_s,
        "validation": [t.validation for t in curves.trials],
        "calls": curves.calls,
    }
    sides = (
        ("asha", "ASHA (bert-eval's ladder)"),
        ("optuna", "Optuna SuccessiveHalvingPruner"),
        ("noise", "ASHA also promoting trials within noise of the cut-off"),
    )
    for side, name in sides:
        s = summary[side]
        low, high = s["regret_ci_pt"]
        yield dict(
            name=f"search replay: mean regret in validation accuracy, {name} vs full search",
            ours=s["regret_mean_pt"],
            baseline=None,
            unit="pt",
            target="<= 0.5 pt" if side == "asha" else "",
            note=f"95% CI [{low:.2f}, {high:.2f}]; regret > 0 in {s['regret_above_0']:.0%} of replays; {setup}",
        )
        yield dict(
            name=f"search replay: training steps, {name} vs full search",
            ours=s["steps_ratio"],
            baseline=1.0,
            unit="x",
            ratio=s["steps_ratio"],
            target="<= 0.35x" if side == "asha" else "",
        )
        yield dict(
            name=f"search replay: training seconds, {name} vs full search",
            ours=s["seconds_ratio"],
            baseline=1.0,
            unit="x",
            ratio=s["seconds_ratio"],
            target="<= 0.45x" if side == "asha" else "",
            note="the full search's seconds: its recorded calls less the fixed cost of its extra rung calls "
            f"(F = {fixed:.2f} s)",
        )
    yield dict(
        name="search: fixed cost per training call F (fit of seconds = F + s * steps)",
        ours=fixed,
        baseline=None,
        unit="s",
        note=f"{len(curves.calls)} recorded calls, s = {per_step:.3f} s/step; the full search's winner is "
        f"{summary['full_oracle_gap_pt']:.2f} pt below the subset's best validation accuracy on average",
    )
    if not live:
        return
    stack = bench.stack("search-replay-live")
    try:
        run, outcome = run_bert_eval(stack, document)
    finally:
        stack.close()
    match = live_matches(curves, outcome, sizes.reduction_factor)
    calls = np.array([[1.0, float(t.rung + 1), float(t.steps)] for t in outcome.trials])
    live_fit = np.linalg.lstsq(calls[:, 1:], np.array([t.train_seconds for t in outcome.trials]), rcond=None)[0]
    bench.raw["search.replay_live"] = {**match, **_raw(run)}
    yield dict(
        name="search: live bert-eval ASHA makes the replay's decisions (same params, promotions, winner)",
        ours=float(match["same_params"] and match["same_promotions"] and match["same_winner"]),
        baseline=None,
        unit="1 = yes",
        target="1",
        note=f"live {run.training_calls} training calls, {run.train_s:.1f} s training, wall {run.wall_s:.1f} s; "
        f"F fitted on the live trials {live_fit[0]:.2f} s (s = {live_fit[1]:.3f} s/step); "
        f"promotions {match['live_promotions']}",
    )


def versus_optuna(asha: SearchRun, theirs: SearchRun, sizes: SearchSizes, label: str) -> Iterator[dict[str, Any]]:
    sums = (
        f"training {asha.train_s:.1f} s vs {theirs.train_s:.1f} s, "
        f"evaluation {asha.eval_s:.1f} s vs {theirs.eval_s:.1f} s, "
        f"training calls {asha.training_calls} vs {theirs.training_calls}"
    )
    yield dict(
        name="search best objective, bert-eval ASHA vs Optuna standalone (TPE + successive halving)",
        ours=_points(asha.best),
        baseline=_points(theirs.best),
        unit="pt",
        target="no worse",
        note=(
            f"difference {_points(asha.best) - _points(theirs.best):+.2f} pt; winners' validation accuracy "
            f"{_points((asha.final_metrics or {}).get('accuracy')):.2f} vs "
            f"{_points((theirs.final_metrics or {}).get('accuracy')):.2f}"
        ),
    )
    yield dict(
        name="search wall time, bert-eval (1 training worker, max_concurrent 1) vs Optuna in one process",
        ours=asha.wall_s,
        baseline=theirs.wall_s,
        unit="s",
        note=f"{label}, {sizes.trials} trials; {sums}",
    )
    yield dict(
        name=(
            "search controller overhead (wall time with no training or evaluation running), "
            "bert-eval vs Optuna in one process"
        ),
        ours=100 * asha.overhead,
        baseline=100 * theirs.overhead,
        unit="% of wall",
        target="<= 10%",
        note=(
            f"idle {asha.wall_s - asha.busy_s:.1f} s of {asha.wall_s:.1f} s vs "
            f"{theirs.wall_s - theirs.busy_s:.1f} s of {theirs.wall_s:.1f} s; "
            f"wall beyond the calls' summed seconds {100 * asha.overhead_of_sums:.1f}% vs "
            f"{100 * theirs.overhead_of_sums:.1f}% "
            "(bert-eval evaluates a rung while the next one trains)"
        ),
    )


def kill_survival(ours: dict[str, Any], theirs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    landed = {k["target"]: k["mid_training"] for k in ours["kills"] + theirs["kills"]}
    yield dict(
        name="kill survival: trials lost, bert-eval vs Optuna on SQLite",
        ours=float(ours["trials_lost"]),
        baseline=float(theirs["trials_lost"]),
        unit="trials",
        target="none lost",
        note=(
            f"bert-eval: eval and training worker SIGKILLed once each "
            f"({len(ours['kills'])} landed; mid-training {landed}), same decisions as "
            f"the undisturbed search: {ours['same_decisions_as_undisturbed']}; "
            f"Optuna: SIGKILLed once, restarted: {theirs['trials_started']} trials "
            f"started for {theirs['trials_started'] - theirs['replacement_trials']}, "
            f"{theirs['trials_repeated']} with the params of an earlier trial"
        ),
    )
    yield dict(
        name="kill survival: training seconds lost to the kills, bert-eval vs Optuna on SQLite",
        ours=ours["wasted_training_s"],
        baseline=theirs["wasted_training_s"],
        unit="s",
        note=(
            f"bert-eval: the killed attempt since its start or last checkpoint; "
            f"Optuna: all training of the trials left RUNNING; "
            f"wall time of the search with its kills {ours['wall_s']:.1f} s vs {theirs['wall_s']:.1f} s "
            f"(Optuna: both processes)"
        ),
    )
    yield dict(
        name="kill survival, bert-eval: rungs trained twice",
        ours=float(ours["rungs_trained_twice"]),
        baseline=None,
        unit="rungs",
        target="0",
        note=f"steps lost {ours['steps_lost']} (journal); fine_tune attempts retried {ours['retried_attempts']}; "
        f"evaluations retried {ours['evaluations_retried']}",
    )


def _steps(run: SearchRun) -> int:
    """Optimizer steps trained, summed over the trials (each trial's steps are those of its last rung)."""
    return sum(t["steps"] or 0 for t in run.trials)


def _points(value: float | None) -> float:
    return 100 * value if value is not None else float("nan")


def _metrics(metrics: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted((metrics or {}).items())) or "none"


def _raw(run: SearchRun) -> dict[str, Any]:
    return {**asdict(run), "overhead": run.overhead, "overhead_of_sums": run.overhead_of_sums}


# ---------------------------------------------------------------- the kill row's subprocess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one Optuna search (the kill row's subprocess), or the replay rows")
    parser.add_argument("command", choices=("optuna", "replay"))
    parser.add_argument("--document", type=Path)
    parser.add_argument("--runs-dir", type=Path)
    data_dir = Path(os.environ.get("BERT_EVAL_DATA_DIR", REPO.parent / "shared" / "data"))
    parser.add_argument("--data-dir", type=Path, default=data_dir)
    parser.add_argument("--storage")
    parser.add_argument("--sizes", choices=("cpu", "small", "mini"), default="cpu", help="replay: REPLAY_<SIZES>")
    parser.add_argument("--no-live", action="store_true", help="replay: skip the live search")
    parser.add_argument("--model", choices=("minilm", "tiny"), default="minilm", help="replay: the model trained")
    parser.add_argument("--work", type=Path, help="replay: scratch directory")
    parser.add_argument(
        "--recorded", type=Path, help="replay: a saved replay output; replay its recording (under --work) again"
    )
    args = parser.parse_args(argv)
    configure_logging(level=os.environ["BERT_EVAL_LOG_LEVEL"])
    if args.command == "replay":
        return replay_main(args)
    if args.document is None or args.runs_dir is None or args.storage is None:
        parser.error("optuna needs --document, --runs-dir and --storage")
    if pace := os.environ.get(PACE_ENV):
        from paced_worker import _paced

        from bert_eval.core.training.callbacks import ProgressEvents

        ProgressEvents.on_step_end = _paced(ProgressEvents.on_step_end, float(pace))
    optuna_search(
        json.loads(args.document.read_text()), runs_dir=args.runs_dir, data_dir=args.data_dir, storage=args.storage
    )
    return 0


def replay_main(args: argparse.Namespace) -> int:
    """Print the ASHA-vs-full rows (and their raw figures) without the rest of `make bench`."""
    import tempfile

    import bench as bench_module  # type: ignore[import-not-found]

    work = args.work or Path(tempfile.mkdtemp(prefix="bert-eval-replay-"))
    bench = bench_module.Bench(bench_module.CPU, work, args.data_dir)
    sizes = {"cpu": REPLAY_CPU, "small": REPLAY_SMALL, "mini": REPLAY_MINI}[args.sizes]
    model, label = MINILM, "MiniLM-L6 (pretrained)"
    if args.model == "tiny":
        model, label = str(bench.tiny_model()), "tiny random BERT"
    recorded = None
    if args.recorded is not None:
        lines = args.recorded.read_text().splitlines()
        recorded = next(json.loads(line) for line in reversed(lines) if line.startswith("{")).get("search.replay")
        if recorded is None or args.work is None:
            raise SystemExit("--recorded needs a raw line with search.replay, and --work holding its runs")
    live = not args.no_live and recorded is None
    for fields in replay_rows(bench, sizes, model, label, live=live, recorded=recorded):
        print(json.dumps(fields), flush=True)
    print(json.dumps(bench.raw, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
