"""Progress for `wait(progress=True)`: a bar from `tqdm.auto` where tqdm is installed (a widget in Jupyter,
text in a terminal), else rich's; and `ProgressBar`, what any display (the CLI's live table, say)
implements to follow an experiment through `AsyncExperimentHandle.wait_with`."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, Protocol

from bert_eval.core.records import TrainingProgress
from bert_eval.temporal.payloads import CoordinatorStatus, ExperimentResult, RunPhase

__all__ = ["ProgressBar", "open_progress_bar", "progress_counts"]

_ENDED_TRIALS = ("completed", "failed", "stopped")


class ProgressBar(Protocol):
    """What `wait_with` reports to while it waits."""

    def update(self, status: CoordinatorStatus, progress: dict[str, TrainingProgress]) -> None:
        """The experiment's status (each run's phase, a search's leaderboard) and live training progress."""

    def note(self, line: str) -> None:
        """A warning line (a task queue no worker polls, and when that changes)."""

    def finish(self, result: ExperimentResult) -> None:
        """The experiment's result, once it has one."""

    def close(self) -> None:
        """Waiting is over (the result came, or waiting failed or was interrupted)."""


def progress_counts(
    status: CoordinatorStatus, progress: dict[str, TrainingProgress], *, trials: int | None = None
) -> tuple[int, int, str]:
    """(ended, total, detail) of an experiment's status: runs that ended out of all runs, with a count per
    phase and the live training steps; for a search, trials that ended out of `trials` (or those sampled)."""
    if status.search is not None:
        states = Counter(trial.state.value for trial in status.search.trials)
        ended = sum(states[state] for state in _ENDED_TRIALS)
        total = max(trials or 0, len(status.search.trials))
        detail = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        return ended, total, detail
    phases = Counter(run.phase for run in status.runs)
    ended = phases[RunPhase.completed] + phases[RunPhase.failed]
    detail = ", ".join(f"{count} {phase.value}" for phase, count in phases.items() if count)
    steps = [(p.step, p.total_steps) for p in progress.values() if p.total_steps]
    if steps:
        detail += f"; training steps {sum(s for s, _ in steps)}/{sum(t for _, t in steps)}"
    return ended, len(status.runs), detail


def open_progress_bar(title: str, *, trials: int | None = None) -> ProgressBar:
    """A bar counting ended runs (a search: ended trials, out of `trials`): tqdm's (`tqdm.auto`, a widget in
    Jupyter) when tqdm is installed, else rich's."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _RichBar(title, trials)
    return _TqdmBar(tqdm, title, trials)


class _CountingBar(ABC):
    """A bar that counts ended runs (or trials) against the total; subclasses draw it."""

    def __init__(self, trials: int | None) -> None:
        self._trials = trials

    def update(self, status: CoordinatorStatus, progress: dict[str, TrainingProgress]) -> None:
        self._show(*progress_counts(status, progress, trials=self._trials))

    def finish(self, result: ExperimentResult) -> None:
        ended = len(result.search.trials) if result.search is not None else len(result.runs)
        failed = sum(run.status == "failed" for run in result.runs)
        self._show(ended, ended, f"finished, {failed} failed" if failed else "finished")

    @abstractmethod
    def _show(self, done: int, total: int, detail: str) -> None:
        """Draw `done` of `total` with a short `detail`."""


class _TqdmBar(_CountingBar):
    def __init__(self, tqdm: Any, title: str, trials: int | None) -> None:
        super().__init__(trials)
        self._tqdm = tqdm
        self._bar = tqdm(total=0, desc=title, unit="run", file=sys.stderr, dynamic_ncols=True)

    def _show(self, done: int, total: int, detail: str) -> None:
        if self._bar.total != total:
            self._bar.reset(total=total)  # not `.total = ...`: Jupyter's widget takes its maximum from reset
        self._bar.n = done
        self._bar.set_postfix_str(detail, refresh=False)
        self._bar.refresh()

    def note(self, line: str) -> None:
        self._tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


class _RichBar(_CountingBar):
    def __init__(self, title: str, trials: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().__init__(trials)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
        )
        self._task = self._progress.add_task(title, total=None, detail="")
        self._progress.start()

    def _show(self, done: int, total: int, detail: str) -> None:
        self._progress.update(self._task, completed=done, total=total, detail=detail)

    def note(self, line: str) -> None:
        self._progress.console.print(line, soft_wrap=True)

    def close(self) -> None:
        self._progress.stop()
