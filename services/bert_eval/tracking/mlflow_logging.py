"""An experiment's runs in MLflow, from what the runs volume holds.

Structure: one parent MLflow run per bert-eval experiment; under it one run per configuration (mean, std and
t-interval over its seeds, `best` / `not_worse` tags) holding one run per seed; a search's trials sit directly
under the parent (tags `trial`, `rung`, the objective per rung as a step metric). Every bert-eval run gets
its spec as params, its training loss and learning rate as step metrics, its final metrics with their
bootstrap interval bounds, and its `eval-<split>.json` and predictions as artifacts.

Logging again is harmless: an MLflow run is found before it is created (the id recorded on the runs volume,
else its `bert_eval.key` tag, which it is created with), metrics carry timestamps taken from the run's files
(MLflow keeps one row per key, step, timestamp and value), and params, tags and artifacts are rewritten
with the same values. So a retried or resumed logging never makes a second MLflow run or a second point.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_eval.core.records import ConfigStats, ExperimentSummary, RunInterval
from bert_eval.core.search.outcome import SearchOutcome
from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.core.storage.layout import RunLayout, experiment_file
from bert_eval.report import write_report

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["KEY_TAG", "LoggedExperiment", "log_experiment", "mlflow_record", "tracking_record_file"]

# The tag every MLflow run bert-eval makes is created with: what it stands for, unique in its MLflow experiment.
KEY_TAG = "bert_eval.key"
_RECORD_NAME = "mlflow.json"


@dataclass
class LoggedExperiment:
    """Where an experiment's results are in MLflow: the experiment, the parent run, one run per bert-eval run."""

    uri: str
    mlflow_experiment_id: str
    parent_run_id: str
    runs: dict[str, str] = field(default_factory=dict)  # bert-eval run id -> MLflow run id
    configs: dict[str, str] = field(default_factory=dict)  # configuration -> MLflow run id
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The record written beside the experiment (`experiments/<id>.mlflow.json`)."""
        return {
            "uri": self.uri,
            "mlflow_experiment_id": self.mlflow_experiment_id,
            "parent_run_id": self.parent_run_id,
            "runs": self.runs,
            "configs": self.configs,
            "seconds": self.seconds,
        }


def tracking_record_file(runs_dir: Path, experiment_id: str) -> Path:
    """`<runs_dir>/experiments/<experiment_id>.mlflow.json`: the experiment's logging state (logged, or why not)."""
    return experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}.mlflow.json")


def mlflow_record(runs_dir: Path, experiment_id: str) -> dict[str, Any] | None:
    """The experiment's logging state as last written, or None if it was never logged."""
    try:
        record: dict[str, Any] = json.loads(tracking_record_file(runs_dir, experiment_id).read_text())
    except (OSError, ValueError):
        return None
    return record


def log_experiment(
    runs_dir: Path,
    experiment_id: str,
    *,
    uri: str,
    mlflow_experiment: str | None = None,
    on_run: Callable[[str], None] = lambda run_id: None,
) -> LoggedExperiment:
    """Log the experiment's runs (as recorded on the runs volume) to the MLflow tracking server at `uri`.

    Parameters:
        runs_dir: the runs volume.
        experiment_id: a bert-eval experiment that has finished (its record and runs are on the volume).
        uri: the tracking URI.
        mlflow_experiment: the MLflow experiment's name; None: the bert-eval experiment id.
        on_run: called with each bert-eval run id once it is logged.

    Returns:
        the MLflow ids; also written to `experiments/<id>.mlflow.json` and each run's `mlflow.json`.

    Raises:
        mlflow.exceptions.MlflowException, OSError: the server failed or went away; logging again resumes.
    """
    from mlflow import MlflowClient

    started = time.perf_counter()
    runs_dir = Path(runs_dir)
    record = json.loads(experiment_file(runs_dir, experiment_id).read_text())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow_experiment_id = _experiment(client, mlflow_experiment or experiment_id)
    finder = _RunFinder(client, mlflow_experiment_id, uri)
    summary = _read_summary(runs_dir, experiment_id)
    search = _read_search(runs_dir, experiment_id)
    parent = finder.find_or_create(
        f"experiment:{experiment_id}",
        experiment_id,
        {"bert_eval.experiment_id": experiment_id, "bert_eval.kind": "experiment"},
    )
    logged = LoggedExperiment(uri=uri, mlflow_experiment_id=mlflow_experiment_id, parent_run_id=parent)
    if search is not None:
        _log_search(client, finder, runs_dir, experiment_id, search, parent, logged, on_run)
    else:
        specs = {spec["run_id"]: spec for spec in record["runs"]}
        _log_configs(client, finder, runs_dir, experiment_id, specs, summary, parent, logged, on_run)
    _log_parent(client, runs_dir, experiment_id, parent, record, summary, search)
    logged.seconds = round(time.perf_counter() - started, 3)
    atomic_write_json(tracking_record_file(runs_dir, experiment_id), {"state": "logged", **logged.to_json()})
    return logged


# --------------------------------------------------------------------------- finding runs


def _experiment(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    try:
        # The MLflow UI opens a "model training" experiment on its runs table (not its GenAI traces).
        return str(client.create_experiment(name, tags={"mlflow.experimentKind": "custom_model_development"}))
    except MlflowException:  # created meanwhile by another attempt
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


class _RunFinder:
    """MLflow runs by what they stand for: the id recorded on the runs volume, else the key tag, else a new run."""

    def __init__(self, client: MlflowClient, experiment_id: str, uri: str) -> None:
        self.client, self.experiment_id, self.uri = client, experiment_id, uri

    def find_or_create(
        self, key: str, name: str, tags: dict[str, str], *, parent: str | None = None, record: Path | None = None
    ) -> str:
        """The MLflow run standing for `key`, created (with its key tag, atomically) if there is none."""
        recorded = self._recorded(record, key)
        if recorded is not None:
            return recorded
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{key}'",
            max_results=2,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            run_id = str(found[0].info.run_id)
        else:
            all_tags = {KEY_TAG: key, "mlflow.runName": name, **tags}
            if parent is not None:
                all_tags["mlflow.parentRunId"] = parent
            run_id = str(self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id)
        if record is not None:
            self._remember(record, key, run_id)
        return run_id

    def _slot(self, key: str) -> str:
        return f"{self.uri} {self.experiment_id} {key}"

    def _recorded(self, record: Path | None, key: str) -> str | None:
        from mlflow.exceptions import MlflowException

        if record is None:
            return None
        try:
            run_id = json.loads(record.read_text()).get(self._slot(key))
        except (OSError, ValueError):
            return None
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:  # deleted from the server, or another server behind the same URI
            return None
        return str(run_id) if run.info.lifecycle_stage == "active" else None

    def _remember(self, record: Path, key: str, run_id: str) -> None:
        try:
            known = json.loads(record.read_text())
        except (OSError, ValueError):
            known = {}
        if known.get(self._slot(key)) != run_id:
            atomic_write_json(record, {**known, self._slot(key): run_id})


# --------------------------------------------------------------------------- experiments of configurations


def _log_configs(
    client: MlflowClient,
    finder: _RunFinder,
    runs_dir: Path,
    experiment_id: str,
    specs: dict[str, dict[str, Any]],
    summary: ExperimentSummary | None,
    parent: str,
    logged: LoggedExperiment,
    on_run: Callable[[str], None],
) -> None:
    stats = {c.config: c for c in summary.configs} if summary is not None else {}
    intervals = _intervals(summary)
    by_config: dict[str, list[str]] = {}
    for run_id, spec in specs.items():
        by_config.setdefault(spec.get("config") or run_id, []).append(run_id)
    for config, run_ids in by_config.items():
        config_run = finder.find_or_create(
            f"config:{experiment_id}/{config}",
            config,
            {"bert_eval.experiment_id": experiment_id, "bert_eval.config": config, "bert_eval.kind": "configuration"},
            parent=parent,
        )
        logged.configs[config] = config_run
        _log_config(client, config_run, specs[run_ids[0]], stats.get(config), runs_dir, run_ids)
        for run_id in run_ids:
            layout = RunLayout(runs_dir, run_id)
            if not layout.root.is_dir():
                continue  # failed before it wrote anything: nothing to log
            tags = {"bert_eval.config": config, "bert_eval.seed": str(specs[run_id]["train"]["seed"])}
            logged.runs[run_id] = _log_run(
                client, finder, layout, experiment_id, specs[run_id], tags, config_run, intervals
            )
            on_run(run_id)


def _log_config(
    client: MlflowClient,
    mlflow_run: str,
    spec: dict[str, Any],
    stats: ConfigStats | None,
    runs_dir: Path,
    run_ids: list[str],
) -> None:
    from mlflow.entities import Param, RunTag

    shared = {k: v for k, v in _flatten(spec).items() if k not in ("run_id", "train.seed")}
    tags = [RunTag("bert_eval.runs", ",".join(run_ids))]
    metrics: dict[str, float] = {}
    if stats is not None:
        m = stats.metric
        metrics = {f"{m}_mean": stats.mean, f"{m}_min": stats.min, f"{m}_max": stats.max, "seeds": float(stats.n)}
        metrics |= _present(
            {
                f"{m}_std": stats.std,
                f"{m}_ci_low": stats.low,
                f"{m}_ci_high": stats.high,
                "p_value_vs_best": stats.p_value,
            }
        )
        tags += [
            RunTag("bert_eval.mark", stats.mark or "only configuration"),
            RunTag("best", str(stats.mark in ("best", None)).lower()),
            RunTag("not_worse", str(stats.mark in ("best", "not significantly worse", None)).lower()),
        ]
    stamp = _stamp(*(RunLayout(runs_dir, r).root for r in run_ids))
    client.log_batch(
        mlflow_run, metrics=_metrics(metrics, stamp), params=[Param(k, v) for k, v in shared.items()], tags=tags
    )
    _finish(client, mlflow_run)


# --------------------------------------------------------------------------- searches


def _log_search(
    client: MlflowClient,
    finder: _RunFinder,
    runs_dir: Path,
    experiment_id: str,
    search: SearchOutcome,
    parent: str,
    logged: LoggedExperiment,
    on_run: Callable[[str], None],
) -> None:
    from mlflow.entities import Metric

    for trial in search.trials:
        layout = RunLayout(runs_dir, trial.run_id)
        spec = (_read_json(layout.spec_file) or {}).get("spec") or {"run_id": trial.run_id}
        tags = {
            "bert_eval.trial": str(trial.trial),
            "bert_eval.rung": str(trial.rung),
            "bert_eval.state": trial.state.value,
            "bert_eval.seed": str((spec.get("train") or {}).get("seed", "")),
            "best": str(trial.run_id == search.best).lower(),
        }
        mlflow_run = _log_run(client, finder, layout, experiment_id, spec, tags, parent, {})
        stamp = _stamp(layout.root)
        objectives = [
            Metric(f"objective_{search.metric}", value, stamp, steps)
            for steps, value in zip(search.rungs, trial.objectives, strict=False)
            if value is not None
        ]
        client.log_batch(mlflow_run, metrics=objectives + _metrics({"train_seconds": trial.train_seconds}, stamp))
        logged.runs[trial.run_id] = mlflow_run
        on_run(trial.run_id)


# --------------------------------------------------------------------------- one bert-eval run


def _log_run(
    client: MlflowClient,
    finder: _RunFinder,
    layout: RunLayout,
    experiment_id: str,
    spec: dict[str, Any],
    tags: dict[str, str],
    parent: str,
    intervals: dict[tuple[str, str | None], RunInterval],
) -> str:
    """One bert-eval run as one MLflow run: params, step history, final metrics and bounds, artifacts."""
    from mlflow.entities import Param, RunTag

    run_id = layout.run_id
    mlflow_run = finder.find_or_create(
        f"run:{experiment_id}/{run_id}",
        run_id,
        {"bert_eval.run_id": run_id, "bert_eval.experiment_id": experiment_id, "bert_eval.kind": "run", **tags},
        parent=parent,
        record=layout.root / _RECORD_NAME,
    )
    stamp = _stamp(layout.root)
    metrics = _history(layout, stamp)
    training = (_read_json(layout.summary_file) or {}).get("summary")
    if isinstance(training, dict):
        metrics += _metrics(
            _present(
                {
                    "final_loss": training.get("final_loss"),
                    "train_seconds": training.get("wall_time_s"),
                    "resumes": training.get("resumes"),
                    "steps": training.get("steps"),
                }
            ),
            stamp,
        )
    artifacts = []
    for eval_file in sorted(layout.root.glob("eval-*.json")):
        evaluation = _read_json(eval_file) or {}
        split = str(evaluation.get("split", eval_file.stem.removeprefix("eval-")))
        values = {f"{split}_{name}": value for name, value in (evaluation.get("metrics") or {}).items()}
        interval = intervals.get((run_id, split))
        if interval is not None:
            values |= _present(
                {f"{split}_{interval.metric}_ci_low": interval.low, f"{split}_{interval.metric}_ci_high": interval.high}
            )
        metrics += _metrics(values, stamp)
        artifacts += [eval_file, layout.predictions_file(split)]
    params = [Param(k, v) for k, v in _flatten(spec).items()]
    all_tags = [RunTag(k, v) for k, v in tags.items()]
    # log_batch takes at most 1000 metrics and 100 params per call.
    for start in range(0, max(len(metrics), len(params), 1), 100):
        client.log_batch(
            mlflow_run,
            metrics=metrics[start : start + 100],
            params=params[start : start + 100],
            tags=all_tags if start == 0 else [],
        )
    for artifact in artifacts:
        if artifact.is_file():
            client.log_artifact(mlflow_run, str(artifact))
    _finish(client, mlflow_run)
    return mlflow_run


def _history(layout: RunLayout, stamp: int) -> list[Any]:
    """The training loss and learning rate at every step the run's history holds."""
    from mlflow.entities import Metric

    history = (_read_json(layout.history_file) or {}).get("log_history") or []
    points = []
    for entry in history:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for source, key in (("loss", "train_loss"), ("learning_rate", "learning_rate")):
            value = entry.get(source)
            if isinstance(value, (int, float)) and math.isfinite(value):
                points.append(Metric(key, float(value), stamp, step))
    return points


def _log_parent(
    client: MlflowClient,
    runs_dir: Path,
    experiment_id: str,
    parent: str,
    record: dict[str, Any],
    summary: ExperimentSummary | None,
    search: SearchOutcome | None,
) -> None:
    from mlflow.entities import Param, RunTag

    params = [Param("experiment_id", experiment_id), Param("runs", str(len(record["run_ids"])))]
    tags = []
    if search is not None:
        params.append(Param("search.metric", search.metric))
        tags += [RunTag("bert_eval.best_run", search.best or "")]
    if summary is not None:
        best = [c.config for c in summary.configs if c.mark in ("best", None)]
        tags += [RunTag("bert_eval.best_config", ",".join(best)), RunTag("bert_eval.split", summary.split)]
    client.log_batch(parent, params=params, tags=tags)
    with tempfile.TemporaryDirectory(prefix="bert-eval-report-") as scratch:
        for suffix in (".json", ".summary.json", ".search.json"):
            path = experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}{suffix}")
            if path.is_file():
                client.log_artifact(parent, str(path))
        report = write_report(runs_dir, experiment_id, Path(scratch) / "report")
        client.log_artifact(parent, str(report), artifact_path="report")
    _finish(client, parent)


# --------------------------------------------------------------------------- helpers


def _finish(client: MlflowClient, mlflow_run: str) -> None:
    """Mark the run finished (once: a run logged again keeps its first end time, so its duration is the logging's)."""
    if client.get_run(mlflow_run).info.status != "FINISHED":
        client.set_terminated(mlflow_run, status="FINISHED")


def _metrics(values: dict[str, Any], stamp: int) -> list[Any]:
    from mlflow.entities import Metric

    return [Metric(key, float(value), stamp, 0) for key, value in values.items() if _finite(value)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _stamp(*paths: Path) -> int:
    """A timestamp (ms) taken from the files themselves, so logging the same run again logs the same points."""
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return int(max(times, default=0.0) * 1000)


def _intervals(summary: ExperimentSummary | None) -> dict[tuple[str, str | None], RunInterval]:
    return {(i.run_id, i.split): i for i in (summary.matrix or summary.runs)} if summary is not None else {}


def _flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec as MLflow params: dotted names, values as text (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}.")
        elif value is not None and value != [] and value != ():
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return {k: v[:6000] for k, v in out.items()}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_summary(runs_dir: Path, experiment_id: str) -> ExperimentSummary | None:
    data = _read_json(experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}.summary.json"))
    return ExperimentSummary.model_validate(data) if data is not None else None


def _read_search(runs_dir: Path, experiment_id: str) -> SearchOutcome | None:
    data = _read_json(experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}.search.json"))
    return SearchOutcome.model_validate(data) if data is not None else None
