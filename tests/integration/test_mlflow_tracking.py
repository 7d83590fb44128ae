"""Results in a real MLflow tracking server: an experiment of 2 configurations x 2 seeds logged by the eval
worker, which is killed while it logs; one MLflow run per bert-eval run, nested under its configuration and
the experiment, with the run records' metrics and interval bounds; the winner registered with the alias."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import REPO, Stack, WorkerProcess
from support.mlflow_server import MlflowServer, start_mlflow_server
from support.ports import free_port
from support.specs import tiny_run

from bert_eval.tracking.mlflow_logging import log_experiment
from bert_eval.tracking.registry import register_winner

pytestmark = pytest.mark.integration

SMALL = dict(max_train_samples=64, batch_size=16, checkpoint_every_steps=None, logging_steps=1)
TRACKING_PACE_S = 2.0


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        server.stop()


def _config(model_dir: Path, name: str, learning_rate: float) -> dict:
    run = tiny_run(model_dir, name, learning_rate=learning_rate, **SMALL)
    run["eval"]["max_eval_samples"] = 96
    return {**run, "seeds": 2}


def _paced_eval_worker(stack: Stack) -> WorkerProcess:
    """An eval worker whose MLflow logging takes TRACKING_PACE_S more per run, so the test can kill it mid-way."""
    port = free_port()
    log_file = stack.log_dir / "paced-eval-worker.log"
    env = stack.env(BERT_EVAL_METRICS_PORT=str(port), BERT_EVAL_TEST_TRACKING_PACE_S=str(TRACKING_PACE_S))
    argv = [sys.executable, str(REPO / "tests" / "integration" / "paced_tracking_worker.py"), "worker", "eval"]
    process = subprocess.Popen(argv, env=env, stdout=open(log_file, "wb"), stderr=subprocess.STDOUT)
    worker = WorkerProcess("eval", process, port, log_file)
    stack.workers.append(worker)
    worker.wait_ready()
    return worker


def _mlflow_runs(client, experiment_name: str, kind: str) -> list:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`bert_eval.kind` = '{kind}'", max_results=1000
    )


def test_experiment_logged_once_per_run_across_a_killed_eval_worker(
    stack: Stack, tiny_model_dir: Path, mlflow_server: MlflowServer
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    stack.start_worker("training")
    paced = _paced_eval_worker(stack)
    experiment = {
        "experiment_id": "tracked",
        "runs": [_config(tiny_model_dir, "slow", 1e-5), _config(tiny_model_dir, "fast", 3e-3)],
        "tracking": {"mlflow": {"uri": mlflow_server.uri, "experiment": "bert-eval-tracked"}},
        "register": {"mlflow": {"name": "sst2-tiny", "alias": "champion"}},
    }
    background = stack.run_in_background(experiment, heartbeat_timeout_s=5.0)

    # Kill the eval worker once MLflow holds the first bert-eval run and before it holds all four.
    deadline = time.monotonic() + 600
    while not _mlflow_runs(client, "bert-eval-tracked", "run"):
        assert time.monotonic() < deadline and background.running, "logging never started"
        time.sleep(0.2)
    paced.kill()
    logged_before_kill = len(_mlflow_runs(client, "bert-eval-tracked", "run"))
    assert 1 <= logged_before_kill < 4
    stack.start_worker("eval")
    result = background.result(timeout_s=600)

    assert [r.status for r in result.runs] == ["completed"] * 4
    assert (
        result.tracking is not None and "logged to MLflow" in result.tracking and "first 'champion'" in result.tracking
    )
    record = json.loads((stack.runs_dir / "experiments" / "tracked.mlflow.json").read_text())
    assert record["state"] == "logged" and record["registration"]["alias_moved"] is True

    # One MLflow run per bert-eval run, per configuration, and one parent: the retry made no second one.
    [parent] = _mlflow_runs(client, "bert-eval-tracked", "experiment")
    configs = {r.data.tags["bert_eval.config"]: r for r in _mlflow_runs(client, "bert-eval-tracked", "configuration")}
    runs = {r.data.tags["bert_eval.run_id"]: r for r in _mlflow_runs(client, "bert-eval-tracked", "run")}
    assert sorted(runs) == sorted(r.run_id for r in result.runs) and sorted(configs) == ["fast", "slow"]
    assert record["runs"] == {run_id: r.info.run_id for run_id, r in runs.items()}
    for config in configs.values():
        assert config.data.tags["mlflow.parentRunId"] == parent.info.run_id
    summary = result.summary
    assert summary is not None
    intervals = {i.run_id: i for i in summary.runs}
    for run in result.runs:
        logged = runs[run.run_id]
        spec = json.loads((stack.runs_dir / "runs" / run.run_id / "spec.json").read_text())["spec"]
        assert logged.data.tags["mlflow.parentRunId"] == configs[run.config].info.run_id
        assert logged.data.tags["bert_eval.seed"] == str(spec["train"]["seed"])
        assert logged.data.tags["bert_eval.experiment_id"] == "tracked" and logged.info.status == "FINISHED"
        for name, value in run.metrics.items():
            assert logged.data.metrics[f"validation_{name}"] == pytest.approx(value)
        interval = intervals[run.run_id]
        assert logged.data.metrics["validation_accuracy_ci_low"] == pytest.approx(interval.low)
        assert logged.data.metrics["validation_accuracy_ci_high"] == pytest.approx(interval.high)
        assert logged.data.params["train.learning_rate"] == str(spec["train"]["learning_rate"])
        # The loss history, once per step (a second point per step would mean a duplicated logging).
        history = client.get_metric_history(logged.info.run_id, "train_loss")
        assert [m.step for m in history] == sorted({m.step for m in history}) and len(history) == run.training.steps
        artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
        registered = {"model"} if run.run_id == record["registration"]["run_id"] else set()
        assert artifacts == {"eval-validation.json", "predictions-validation.parquet"} | registered
    for stats in summary.configs:
        logged = configs[stats.config].data
        assert logged.metrics["accuracy_mean"] == pytest.approx(stats.mean)
        assert logged.metrics["accuracy_std"] == pytest.approx(stats.std)
        if stats.low is not None:
            assert (logged.metrics["accuracy_ci_low"], logged.metrics["accuracy_ci_high"]) == (
                pytest.approx(stats.low),
                pytest.approx(stats.high),
            )
        assert logged.tags["best"] == str(stats.mark == "best").lower()
        assert logged.tags["not_worse"] == str(stats.mark in ("best", "not significantly worse")).lower()
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"tracked.json", "tracked.summary.json", "report"} <= parent_artifacts

    # The winner is a model version with its metrics and interval as tags, and holds the alias.
    winner = record["registration"]["run_id"]
    champion = client.get_model_version_by_alias("sst2-tiny", "champion")
    assert champion.tags["bert_eval.run_id"] == winner and champion.run_id == runs[winner].info.run_id
    assert float(champion.tags["validation_accuracy"]) == pytest.approx(intervals[winner].value, abs=1e-5)
    assert champion.tags["validation_accuracy_ci"] == f"[{intervals[winner].low:.6g}, {intervals[winner].high:.6g}]"
    print(
        f"\nMLflow runs present when the eval worker was killed: {logged_before_kill} of 4; "
        f"after the retry: {len(runs)}"
    )

    # A run that is not better does not take the alias; the same run registered again is the same version.
    other = min((r for r in summary.runs if r.run_id != winner), key=lambda r: r.value)
    registration = register_winner(
        stack.runs_dir,
        "tracked",
        uri=mlflow_server.uri,
        mlflow_run_id=runs[other.run_id].info.run_id,
        winner=other.run_id,
        reason="test",
        name="sst2-tiny",
        alias="champion",
        split="validation",
    )
    assert not registration.alias_moved and "stays on version" in registration.sentence
    assert client.get_model_version_by_alias("sst2-tiny", "champion").version == champion.version
    again = register_winner(
        stack.runs_dir,
        "tracked",
        uri=mlflow_server.uri,
        mlflow_run_id=runs[winner].info.run_id,
        winner=winner,
        reason="test",
        name="sst2-tiny",
        alias="champion",
        split="validation",
    )
    assert again.version == champion.version and not again.alias_moved

    # Logging overhead: the same experiment logged into a fresh MLflow experiment, timed.
    started = time.perf_counter()
    fresh = log_experiment(stack.runs_dir, "tracked", uri=mlflow_server.uri, mlflow_experiment="bert-eval-overhead")
    seconds = time.perf_counter() - started
    assert len(fresh.runs) == 4 and len(_mlflow_runs(client, "bert-eval-overhead", "run")) == 4
    print(f"MLflow logging: {seconds:.2f} s for 4 runs, 2 configurations and the parent ({seconds / 4:.2f} s per run)")


def test_a_search_logs_its_trials_under_the_experiment_and_registers_its_winner(
    stack: Stack, tiny_model_dir: Path, mlflow_server: MlflowServer
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    stack.start_workers("training", "eval")
    template = tiny_run(
        tiny_model_dir,
        "template",
        max_train_samples=200,
        batch_size=16,
        epochs=1,
        checkpoint_every_steps=None,
        checkpoint_every_seconds=None,
        eval_samples=64,
    )
    template.pop("run_id")
    experiment = {
        "experiment_id": "tracked-search",
        "defaults": template,
        "search": {
            "space": {"train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]}},
            "sampler": "random",
            "trials": 3,
            "max_concurrent": 3,
            "seed": 1,
            "objective": {"metric": "accuracy", "holdout": 0.2},
            "scheduler": {"type": "asha", "min_steps": 3, "reduction_factor": 3},
        },
        "tracking": {"mlflow": {"uri": mlflow_server.uri, "experiment": "bert-eval-search"}},
        "register": {"mlflow": {"name": "sst2-search", "alias": "champion"}},
    }
    result = stack.run_experiment(experiment)
    search = result.search
    assert search is not None and search.best is not None
    assert result.tracking is not None and "logged to MLflow" in result.tracking

    [parent] = _mlflow_runs(client, "bert-eval-search", "experiment")
    runs = {r.data.tags["bert_eval.run_id"]: r for r in _mlflow_runs(client, "bert-eval-search", "run")}
    assert sorted(runs) == sorted(t.run_id for t in search.trials)
    for trial in search.trials:
        logged = runs[trial.run_id]
        assert logged.data.tags["mlflow.parentRunId"] == parent.info.run_id
        tags = logged.data.tags
        assert (tags["bert_eval.trial"], tags["bert_eval.rung"]) == (str(trial.trial), str(trial.rung))
        assert logged.data.tags["best"] == str(trial.run_id == search.best).lower()
        objectives = client.get_metric_history(logged.info.run_id, "objective_accuracy")
        rungs = zip(search.rungs, trial.objectives, strict=False)
        measured = [(step, value) for step, value in rungs if value is not None]
        assert sorted((m.step, m.value) for m in objectives) == [(s, pytest.approx(v)) for s, v in measured]
        assert float(logged.data.params["train.learning_rate"]) == pytest.approx(trial.params["train.learning_rate"])
    champion = client.get_model_version_by_alias("sst2-search", "champion")
    assert champion.tags["bert_eval.run_id"] == search.best


def test_logging_waits_for_an_unreachable_server_says_so_and_catches_up(
    stack: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import asyncio

    from bert_eval.temporal.names import QUERY, coordinator_workflow_id
    from bert_eval.temporal.payloads import CoordinatorStatus

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    stack.start_workers("training", "eval")
    run = tiny_run(tiny_model_dir, "late-server", **SMALL)
    experiment = {"experiment_id": "late-server", "runs": [run], "tracking": {"mlflow": {"uri": uri}}}
    background = stack.run_in_background(experiment)

    record_file = stack.runs_dir / "experiments" / "late-server.mlflow.json"
    deadline = time.monotonic() + 300
    while not (record_file.is_file() and json.loads(record_file.read_text())["state"] == "unreachable"):
        assert time.monotonic() < deadline and background.running, "the unreachable server was never recorded"
        time.sleep(0.5)
    assert uri in json.loads(record_file.read_text())["error"]

    async def status() -> CoordinatorStatus:
        client = await stack.client()
        handle = client.get_workflow_handle(coordinator_workflow_id("late-server"))
        return await handle.query(QUERY.status, result_type=CoordinatorStatus)

    while "waits" not in (asyncio.run(status()).tracking or ""):
        assert time.monotonic() < deadline, "status never said that logging waits"
        time.sleep(0.5)
    assert f"MLflow logging to {uri} failed" in (asyncio.run(status()).tracking or "")
    assert background.running

    server = start_mlflow_server(tmp_path / "late-mlflow", port=port)
    try:
        result = background.result(timeout_s=600)
        assert [r.status for r in result.runs] == ["completed"]
        assert result.tracking is not None and result.tracking.startswith(f"logged to MLflow at {uri}")
        assert json.loads(record_file.read_text())["state"] == "logged"
        from mlflow import MlflowClient

        runs = MlflowClient(tracking_uri=uri).search_runs(
            [MlflowClient(tracking_uri=uri).get_experiment_by_name("late-server").experiment_id],
            filter_string="tags.`bert_eval.kind` = 'run'",
        )
        assert [r.data.tags["bert_eval.run_id"] for r in runs] == ["late-server"]
    finally:
        server.stop()
