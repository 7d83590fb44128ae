"""Reading an experiment's artifacts from the runs directory into records; never draws, never writes.

Per run, the artifacts the core writes (RunLayout): the loss history (`training-history.json`, or the newest
checkpoint's `trainer_state.json` while a run is unfinished), checkpoint and resume events (`events.jsonl`), the
training summary and the `eval-<split>.json` files. Per experiment: `experiments/<id>.json` (the run ids), the
statistics (`<id>.summary.json`) and, for a search, its outcome (`<id>.search.json`), read as the Temporal
layer's `SearchOutcome` itself. A missing or damaged file becomes a problem on its record, never an exception,
except an unknown experiment (`ReportError`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bert_eval.core.records import EvalResult, ExperimentSummary, TrainingSummary
from bert_eval.core.search.asha import TrialState
from bert_eval.core.search.outcome import SearchOutcome, SearchTrial
from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout, experiment_file
from bert_eval.spec import normalize_id

__all__ = [
    "ExperimentRecords",
    "ReportError",
    "RunRecord",
    "collect_experiment",
    "collect_run",
    "log_scale",
    "measured",
    "param_name",
    "rung_points",
    "searched_params",
]

_TRAINER_STATE = "trainer_state.json"


class ReportError(RuntimeError):
    """The report cannot be written at all (the experiment is unknown here)."""


@dataclass
class RunRecord:
    """What the runs directory says about one run."""

    run_id: str
    state: str = "no artifacts on disk"
    losses: list[tuple[int, float]] = field(default_factory=list)
    loss_source: str | None = None
    checkpoints: list[int] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    summary: TrainingSummary | None = None
    evaluations: dict[str, EvalResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class ExperimentRecords:
    """Everything the report shows for one experiment.

    `runs` are the experiment's runs, or a search's trials (its template run never trains). `configs` maps
    a run id to its configuration's name, from the statistics; a run the statistics do not name is its own
    configuration. `search_problem` says why a search record on disk could not be read.
    """

    experiment_id: str
    runs_dir: Path
    runs: list[RunRecord]
    summary: ExperimentSummary | None = None
    search: SearchOutcome | None = None
    search_problem: str | None = None
    rung_points: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)

    def config_of(self, run_id: str) -> str:
        """The configuration a run belongs to (its own id when the statistics do not name one)."""
        if self.summary is not None:
            for interval in self.summary.runs:
                if interval.run_id == run_id:
                    return interval.config
        return run_id


def _read_json(path: Path, record: RunRecord) -> Any | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        record.problems.append(f"{path.name} unreadable ({exc})")
        return None


def _losses(log_history: Any) -> list[tuple[int, float]]:
    if not isinstance(log_history, list):
        return []
    return [
        (int(entry["step"]), float(entry["loss"]))
        for entry in log_history
        if isinstance(entry, dict) and "loss" in entry and "step" in entry
    ]


def collect_run(runs_dir: Path, run_id: str) -> RunRecord:
    """Everything the report shows for one run, read from `runs_dir`.

    Args:
        runs_dir: the runs directory the workers write to.
        run_id: a canonical run id (it becomes a path).

    Returns:
        The run's record; its `state` says how far the run got and `problems` lists each damaged file. Never
        raises on missing or damaged files.
    """
    record = RunRecord(run_id=run_id)
    layout = RunLayout(runs_dir, run_id)
    if not layout.root.is_dir():
        return record

    events = RunJournal(layout.journal_file).read()
    record.checkpoints = sorted({int(e["step"]) for e in events if e.get("event") == "checkpoint" and "step" in e})
    record.resumes = [e for e in events if e.get("event") == "resume"]

    summary = _read_json(layout.summary_file, record)
    if summary is not None:
        try:
            record.summary = TrainingSummary.model_validate(summary["summary"])
        except (KeyError, TypeError, ValueError) as exc:
            record.problems.append(f"{layout.summary_file.name} invalid ({exc.__class__.__name__})")

    history = _read_json(layout.history_file, record)
    if isinstance(history, dict):
        record.losses, record.loss_source = _losses(history.get("log_history")), layout.history_file.name
    latest = CheckpointStore(layout.checkpoints).latest_complete()
    if not record.losses and latest is not None:
        # Unfinished run: the Trainer keeps the log history so far in every checkpoint.
        state = _read_json(latest.path / _TRAINER_STATE, record)
        if isinstance(state, dict):
            record.losses = _losses(state.get("log_history"))
            record.loss_source = f"{latest.path.name}/{_TRAINER_STATE}"

    for eval_file in sorted(layout.root.glob("eval-*.json")):
        payload = _read_json(eval_file, record)
        if payload is None:
            continue
        try:
            result = EvalResult.model_validate(payload)
        except ValueError as exc:
            record.problems.append(f"{eval_file.name} invalid ({exc.__class__.__name__})")
            continue
        record.evaluations[result.split] = result

    if record.summary is not None and record.evaluations:
        record.state = "completed"
    elif record.summary is not None:
        record.state = "trained, not evaluated"
    elif latest is not None:
        record.state = f"incomplete (last checkpoint at step {latest.step})"
    else:
        record.state = "started, no checkpoint yet"
    return record


def _experiment_run_ids(runs_dir: Path, experiment_id: str) -> list[str]:
    path = experiment_file(runs_dir, experiment_id)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(
            f"experiment {experiment_id}: {path} does not exist. Check the experiment id and that "
            "BERT_EVAL_RUNS_DIR points at the runs directory the workers write to."
        ) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"experiment {experiment_id}: cannot read {path}: {exc}") from None
    run_ids = payload.get("run_ids") if isinstance(payload, dict) else None
    if not isinstance(run_ids, list) or not all(isinstance(r, str) for r in run_ids):
        raise ReportError(f"experiment {experiment_id}: {path} has no 'run_ids' list of strings")
    return run_ids


def _canonical(run_id: str) -> bool:
    try:
        return normalize_id(run_id) == run_id
    except ValueError:
        return False


def _read_search(runs_dir: Path, experiment_id: str) -> tuple[SearchOutcome | None, str | None]:
    """The search's outcome, or None for a plain experiment; a record that cannot be read gives a problem."""
    path = experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}.search.json")
    try:
        search = SearchOutcome.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValidationError) as exc:
        return None, f"{path.name} unreadable ({exc.__class__.__name__}): the search's trials are not shown"
    odd = [t.run_id for t in search.trials if not _canonical(t.run_id)]
    if odd:  # a run id becomes a path below: refuse one that could leave the runs directory
        return (
            None,
            f"{path.name} names run ids that are not canonical ({', '.join(map(repr, odd[:3]))}): "
            "the search's trials are not shown",
        )
    return search, None


def _read_summary(runs_dir: Path, experiment_id: str) -> ExperimentSummary | None:
    path = experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}.summary.json")
    try:
        return ExperimentSummary.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def _trial_run(runs_dir: Path, trial: SearchTrial) -> RunRecord:
    """A search trial's run, its state said the way the search decided it."""
    record = collect_run(runs_dir, trial.run_id)
    if trial.state is TrialState.stopped:
        record.state = f"stopped by the search at step {trial.steps}"
    elif trial.state is TrialState.paused:
        record.state = f"paused at step {trial.steps}, waiting for the search to promote it"
    elif trial.state is TrialState.failed:
        record.state = "failed" + (f": {trial.error}" if trial.error else "")
    return record


def rung_points(runs_dir: Path, search: SearchOutcome, trial: SearchTrial) -> list[tuple[int, float | None]]:
    """(step, objective) of each rung the trial reached. The steps are those of its `rungs/step-<N>.json`
    (a trial with another budget than the template's has other rungs); without them, the template's rungs
    and the trial's own last step."""
    names = [
        p.stem.removeprefix("step-") for p in (RunLayout(runs_dir, trial.run_id).root / "rungs").glob("step-*.json")
    ]
    recorded = sorted(int(n) for n in names if n.isdigit())
    points: list[tuple[int, float | None]] = []
    for rung, objective in enumerate(trial.objectives):
        if rung < len(recorded):
            step = recorded[rung]
        elif rung == trial.rung:
            step = trial.steps
        elif rung < len(search.rungs):
            step = search.rungs[rung]
        else:
            continue
        points.append((step, objective))
    return points


def collect_experiment(runs_dir: Path, experiment_id: str) -> ExperimentRecords:
    """Read everything the report shows for an experiment.

    Args:
        runs_dir: the runs directory the workers write to.
        experiment_id: a canonical experiment id.

    Returns:
        The experiment's records: its runs (a search's trials, in trial order), statistics and search outcome.

    Raises:
        ReportError: `experiments/<id>.json` is missing, unreadable or lists no run ids.
    """
    runs_dir = Path(runs_dir)
    run_ids = _experiment_run_ids(runs_dir, experiment_id)
    search, problem = _read_search(runs_dir, experiment_id)
    if search is not None:
        trials = sorted(search.trials, key=lambda t: t.trial)
        runs = [_trial_run(runs_dir, trial) for trial in trials]
        points = {t.run_id: rung_points(runs_dir, search, t) for t in trials}
    else:
        runs, points = [collect_run(runs_dir, run_id) for run_id in run_ids], {}
    return ExperimentRecords(
        experiment_id=experiment_id,
        runs_dir=runs_dir,
        runs=runs,
        summary=_read_summary(runs_dir, experiment_id),
        search=search,
        search_problem=problem,
        rung_points=points,
    )


def param_name(path: str) -> str:
    """A searched parameter's name as shown (`train.learning_rate` -> `learning_rate`)."""
    return path.removeprefix("train.")


def searched_params(search: SearchOutcome) -> list[str]:
    """The searched parameters' paths, in first-seen order."""
    return list(dict.fromkeys(name for trial in search.trials for name in trial.params))


def measured(search: SearchOutcome, name: str) -> list[tuple[SearchTrial, float, float]]:
    """(trial, its value of `name`, its objective at its highest rung) for each trial with that objective."""
    return [
        (t, float(t.params[name]), t.objective) for t in search.trials if t.objective is not None and name in t.params
    ]


def log_scale(search: SearchOutcome, name: str) -> bool:
    """Learning-rate-like parameters: positive values spanning more than a factor of 10."""
    values = [x for _, x, _ in measured(search, name)]
    return bool(values) and min(values) > 0 and max(values) > 10 * min(values)
