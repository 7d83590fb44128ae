"""Who owns a run directory: a run's spec is recorded in it, and another spec's results are never touched."""

from __future__ import annotations

import json

from bert_eval.core.checkpoints import CheckpointStore
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.fsutil import atomic_write_json
from bert_eval.core.layout import RunLayout
from bert_eval.types import RunSpec, TrainingSummary

__all__ = ["claim_run_dir", "completed_summary", "run_dir_conflict"]


def run_dir_conflict(layout: RunLayout, run: RunSpec) -> str | None:
    """Why this run may not use its directory (it holds results of a different spec), or None."""
    if not layout.spec_file.exists():
        return None
    recorded = json.loads(layout.spec_file.read_text())
    if recorded.get("fingerprint") == run.fingerprint() or not _holds_results(layout):
        return None
    return (
        f"run {run.id}: {layout.root} already holds results of a run with a different model, dataset or "
        "hyperparameters; its files are left untouched. Choose another run_id, or delete that directory to "
        "start over."
    )


def _holds_results(layout: RunLayout) -> bool:
    return (
        CheckpointStore(layout.checkpoints).latest_complete() is not None
        or layout.model_dir.exists()
        or layout.summary_file.exists()
        or any(layout.root.glob("eval-*.json"))
    )


def claim_run_dir(layout: RunLayout, run: RunSpec) -> None:
    """Record the run's spec, or refuse if the directory holds another spec's results (never overwrite them).
    A directory whose run produced nothing (it failed on bad input, say) is taken over by the new spec."""
    if (conflict := run_dir_conflict(layout, run)) is not None:
        raise InvalidInputError(conflict)
    record = {"fingerprint": run.fingerprint(), "spec": run.model_dump(mode="json")}
    if not layout.spec_file.exists() or json.loads(layout.spec_file.read_text()) != record:
        atomic_write_json(layout.spec_file, record)


def completed_summary(layout: RunLayout, run: RunSpec) -> TrainingSummary | None:
    """The summary of a finished training of exactly this spec, if there is one."""
    if not (layout.summary_file.is_file() and (layout.model_dir / "config.json").is_file()):
        return None
    payload = json.loads(layout.summary_file.read_text())
    if payload.get("fingerprint") != run.fingerprint():
        return None
    return TrainingSummary.model_validate(payload["summary"])
