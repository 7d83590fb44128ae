"""Where a run's artifacts live under the runs directory (one place knows the layout)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.storage.fsutil import atomic_write_json, atomic_write_text
from bert_eval.core.storage.journal import RunJournal
from bert_eval.spec import normalize_id

__all__ = ["CellLayout", "RunLayout", "evals_dir", "experiment_file", "snapshots_dir", "write_experiment_record"]


def snapshots_dir(runs_dir: Path) -> Path:
    """`<runs_dir>/snapshots/`: content-addressed dataset snapshots, one directory per snapshot id."""
    return Path(runs_dir) / "snapshots"


def evals_dir(runs_dir: Path) -> Path:
    """`<runs_dir>/evals/`: evaluation cells, one per (model digest, snapshot, split)."""
    return Path(runs_dir) / "evals"


def experiment_file(runs_dir: Path, experiment_id: str) -> Path:
    """`<runs_dir>/experiments/<experiment_id>.json`: which runs an experiment holds (for reports).

    Raises ValueError if `experiment_id` is not canonical, InvalidInputError if the path or its folder is
    a symbolic link."""
    if normalize_id(experiment_id, what="experiment_id") != experiment_id:
        raise ValueError(f"experiment_id {experiment_id!r} is not canonical")
    path = Path(runs_dir) / "experiments" / f"{experiment_id}.json"
    for part in (path.parent, path):
        if part.is_symlink():
            raise InvalidInputError(
                f"experiment {experiment_id}: {part} is a symbolic link; refusing to write through it. "
                "Replace it with a plain directory or file."
            )
    return path


def write_experiment_record(path: Path, payload: dict[str, Any]) -> None:
    """Write an experiment record atomically. When the record there lists other runs, it is first kept
    beside it as `<id>.superseded-<digest>.json` (named by its content: writing again writes the same file),
    so a run an experiment once recorded stays findable."""
    try:
        previous = path.read_text()
        previous_runs = json.loads(previous).get("run_ids")
    except (OSError, ValueError, AttributeError):
        previous, previous_runs = None, None
    if previous is not None and previous_runs != payload.get("run_ids"):
        kept = path.with_name(f"{path.stem}.superseded-{hashlib.sha256(previous.encode()).hexdigest()[:12]}.json")
        if not kept.exists():
            atomic_write_text(kept, previous)
    atomic_write_json(path, payload)


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run: `<runs_dir>/runs/<run_id>/{spec.json, checkpoints/, model/,
    training-summary.json, eval-<split>.json, predictions-<split>.parquet, ...}`.

    Building a layout touches nothing on disk; `ensure_safe` creates the run directory.

    Parameters
    ----------
    runs_dir : Path
        The runs volume's root (`BERT_EVAL_RUNS_DIR`).
    run_id : str
        The run's canonical id (`bert_eval.spec.normalize_id`); it becomes a directory name.

    Raises
    ------
    ValueError
        If `run_id` is not canonical (it could lead outside `runs_dir`).
    """

    runs_dir: Path
    run_id: str

    def __post_init__(self) -> None:
        # Re-validate: this is the last line of defence before an id becomes a path.
        if normalize_id(self.run_id) != self.run_id:
            raise ValueError(f"run_id {self.run_id!r} is not canonical")

    @property
    def root(self) -> Path:
        """The run's directory, `<runs_dir>/runs/<run_id>`."""
        return Path(self.runs_dir) / "runs" / self.run_id

    @property
    def spec_file(self) -> Path:
        """`spec.json`: the spec and fingerprint that own this directory."""
        return self.root / "spec.json"

    @property
    def checkpoints(self) -> Path:
        """`checkpoints/`: the run's `CheckpointStore` directory."""
        return self.root / "checkpoints"

    @property
    def model_dir(self) -> Path:
        """`model/`: the final fine-tuned model and tokenizer."""
        return self.root / "model"

    @property
    def summary_file(self) -> Path:
        """`training-summary.json`: the finished training's `TrainingSummary` and the spec's fingerprint."""
        return self.root / "training-summary.json"

    @property
    def journal_file(self) -> Path:
        """`events.jsonl`: the run's `RunJournal` (checkpoints, resumes, completion across attempts)."""
        return self.root / "events.jsonl"

    @property
    def journal(self) -> RunJournal:
        """The run's event journal, at `journal_file`."""
        return RunJournal(self.journal_file)

    @property
    def history_file(self) -> Path:
        """`training-history.json`: the logged loss and learning rate per step."""
        return self.root / "training-history.json"

    @property
    def attempt_file(self) -> Path:
        """`attempt.json`: the current attempt's claim (`AttemptFence`)."""
        return self.root / "attempt.json"

    @property
    def lock_file(self) -> Path:
        """`.lock`: the file locked while an attempt publishes into the run."""
        return self.root / ".lock"

    def eval_file(self, split: str) -> Path:
        """`eval-<split>.json`: the run's `EvalResult` on `split`."""
        return self.root / f"eval-{split}.json"

    def predictions_file(self, split: str) -> Path:
        """Per-example predictions of the evaluation that `eval_file(split)` summarizes."""
        return self.root / f"predictions-{split}.parquet"

    def escape(self) -> str | None:
        """Why this run's directory is not safe to use (a symlink, or resolving outside the runs
        directory), or None. Every writer checks it first, so no spec can make a worker write elsewhere."""
        expected = Path(self.runs_dir).resolve() / "runs" / self.run_id
        for path in (
            self.root.parent,
            self.root,
            self.spec_file,
            self.checkpoints,
            self.model_dir,
            self.summary_file,
            self.history_file,
            self.journal_file,
            self.attempt_file,
            self.lock_file,
        ):
            if path.is_symlink():
                return (
                    f"run {self.run_id}: {path} is a symbolic link (to {os.readlink(path)}); refusing to read or "
                    f"write through it, so nothing lands outside {self.runs_dir}. Replace it with a plain directory "
                    "or file, or use another run_id."
                )
        if self.root.exists() and self.root.resolve() != expected:
            return (
                f"run {self.run_id}: {self.root} resolves to {self.root.resolve()}, outside {expected.parent}; "
                "use another run_id."
            )
        return None

    def ensure_safe(self) -> None:
        """Create the run directory if needed.

        Raises
        ------
        InvalidInputError
            If the directory, or a file in it, is a symbolic link or resolves outside the runs directory.
        """
        if (problem := self.escape()) is not None:
            raise InvalidInputError(problem)
        self.root.mkdir(parents=True, exist_ok=True)
        if (problem := self.escape()) is not None:  # raced with someone creating a link
            raise InvalidInputError(problem)


# A model digest and a snapshot id are 16 hex digits; a split name is what EvalRequest.split accepts.
_DIGEST = re.compile(r"[0-9a-f]{16}")
_SPLIT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class CellLayout:
    """`<runs_dir>/evals/<model_digest>-<snapshot_id>-<split>/{eval.json, predictions.parquet}`: the one
    evaluation of a model (by content) on a snapshot's evaluation table, shared by every run that asks for it.

    Raises ValueError if the digest or snapshot id is not 16 hex digits, or the split name is not a plain name.
    """

    runs_dir: Path
    model_digest: str
    snapshot_id: str
    split: str

    def __post_init__(self) -> None:
        # Each part becomes part of a directory name: nothing may lead elsewhere.
        for what, value, pattern in (
            ("model digest", self.model_digest, _DIGEST),
            ("snapshot id", self.snapshot_id, _DIGEST),
            ("split", self.split, _SPLIT),
        ):
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValueError(f"evaluation cell: {what} {value!r} must match {pattern.pattern}")

    @property
    def name(self) -> str:
        """The cell's directory name, `<model_digest>-<snapshot_id>-<split>`."""
        return f"{self.model_digest}-{self.snapshot_id}-{self.split}"

    @property
    def root(self) -> Path:
        """The cell's directory under `<runs_dir>/evals/`."""
        return evals_dir(self.runs_dir) / self.name

    @property
    def eval_file(self) -> Path:
        """`eval.json`: the cell's `EvalResult`."""
        return self.root / "eval.json"

    @property
    def predictions_file(self) -> Path:
        """`predictions.parquet`: the cell's per-example predictions."""
        return self.root / "predictions.parquet"

    def run_file(self, run_id: str) -> Path:
        """`runs/<run_id>.json`: says that run `run_id` was evaluated as this cell (an eval-only run has no run
        directory: `compare` finds its evaluation through this file, `runs_evaluated_as`)."""
        if normalize_id(run_id) != run_id:
            raise ValueError(f"run_id {run_id!r} is not canonical")
        return self.root / "runs" / f"{run_id}.json"

    @classmethod
    def runs_evaluated_as(cls, runs_dir: Path, run_id: str, split: str) -> list[Path]:
        """The `run_file`s of every cell of `split` that run `run_id` was evaluated as, in name order."""
        if normalize_id(run_id) != run_id or not _SPLIT.fullmatch(split):
            raise ValueError(f"run {run_id!r}, split {split!r}: not a canonical run id and split name")
        cells = "?" * 16 + "-" + "?" * 16 + f"-{split}"
        return sorted(evals_dir(runs_dir).glob(f"{cells}/runs/{run_id}.json"))

    def escape(self) -> str | None:
        """Why this cell's directory is not safe to use (a symbolic link, or resolving outside the runs
        directory), or None; as RunLayout.escape."""
        expected = Path(self.runs_dir).resolve() / "evals" / self.name
        for path in (self.root.parent, self.root, self.eval_file, self.predictions_file):
            if path.is_symlink():
                return (
                    f"evaluation cell {self.name}: {path} is a symbolic link (to {os.readlink(path)}); refusing to "
                    f"read or write through it, so nothing lands outside {self.runs_dir}. Replace it with a plain "
                    "directory or file."
                )
        if self.root.exists() and self.root.resolve() != expected:
            return (
                f"evaluation cell {self.name}: {self.root} resolves to {self.root.resolve()}, "
                f"outside {expected.parent}."
            )
        return None

    def ensure_safe(self) -> None:
        """Create `<runs_dir>/evals/` if needed; InvalidInputError if the cell is (or leads) outside the runs
        directory."""
        if (problem := self.escape()) is not None:
            raise InvalidInputError(problem)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        if (problem := self.escape()) is not None:  # raced with someone creating a link
            raise InvalidInputError(problem)
