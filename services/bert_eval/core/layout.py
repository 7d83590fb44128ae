"""Where a run's artifacts live under the runs directory (one place knows the layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bert_eval.types import normalize_id

__all__ = ["RunLayout", "experiment_file", "snapshots_dir"]


def snapshots_dir(runs_dir: Path) -> Path:
    return Path(runs_dir) / "snapshots"


def experiment_file(runs_dir: Path, experiment_id: str) -> Path:
    """`<runs_dir>/experiments/<experiment_id>.json`: which runs an experiment holds (for reports)."""
    if normalize_id(experiment_id, what="experiment_id") != experiment_id:
        raise ValueError(f"experiment_id {experiment_id!r} is not canonical")
    return Path(runs_dir) / "experiments" / f"{experiment_id}.json"


@dataclass(frozen=True)
class RunLayout:
    """`<runs_dir>/runs/<run_id>/{spec.json, checkpoints/, model/, training-summary.json, eval-<split>.json}`."""

    runs_dir: Path
    run_id: str

    def __post_init__(self) -> None:
        # Re-validate: this is the last line of defence before an id becomes a path.
        if normalize_id(self.run_id) != self.run_id:
            raise ValueError(f"run_id {self.run_id!r} is not canonical")

    @property
    def root(self) -> Path:
        return Path(self.runs_dir) / "runs" / self.run_id

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def summary_file(self) -> Path:
        return self.root / "training-summary.json"

    @property
    def journal_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def history_file(self) -> Path:
        return self.root / "training-history.json"

    def eval_file(self, split: str) -> Path:
        return self.root / f"eval-{split}.json"
