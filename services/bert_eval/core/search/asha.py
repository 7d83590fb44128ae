"""Asynchronous successive halving (ASHA) whose decisions do not depend on timing.

The search workflow holds a `Ladder` (plain data: it travels through continue-as-new and status queries).
Trials start at rung 0; a trial whose rung-k objective is among the top 1/η of the rung-k results so far is
promoted to rung k+1, and resumes there from its rung-k checkpoint. Results may arrive in any order (a
killed worker delays one trial, another finishes first), so the ladder *processes* them in one canonical
order: rung 0 in trial order, rung k+1 in the order trials were promoted into it. A result that arrives
early waits until those before it are processed. So the promotions, and the history each new trial is
sampled with (`sampler_view`), are a function of the seed and the objectives alone: an interrupted
search makes exactly the decisions of an undisturbed one.

What a new trial's sampler sees is fixed by a lag, not by timing (`sampling_lag`, usually max_concurrent + 1):
trial i sees the rung-0 results of the trials at least `lag` before it and, at each higher rung, the results
of the promotions decided at least `lag` results before the rung below's visible ones; it waits only for
those. A sampler that ignores results (random, grid, TPE's random start-up trials) waits for nothing
(`free_samples`). Ladders made before the lag existed (`sampling_lag` None) keep their original gate: trial
i waited for the rung-0 results of the trials at least max_concurrent before it.

Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys 2020) describe ASHA; this is its
promotion rule (top floor(n/η) of the n results at a rung) applied in that canonical order. Two additions: a
search too small for its top rungs ends by training its leader on (`_promote_leader`), so it always has a
winner trained to its full budget; and equal objectives (frequent on a small slice: accuracy moves in steps of
one row) are ranked by the slice's loss, lower first (`loss_ties`), then by trial index.
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import BaseModel, Field

__all__ = ["Job", "Ladder", "SeenTrial", "Trial", "TrialState"]


class TrialState(str, Enum):
    """Where a trial is in the search."""

    running = "running"  # sampled, a rung in flight or queued
    paused = "paused"  # finished a rung below its budget; promoted only if it ranks in the top 1/η
    stopped = "stopped"  # the search ended without promoting it (its last rung's checkpoint is kept)
    completed = "completed"  # trained to its full budget
    failed = "failed"


class Trial(BaseModel):
    """One trial of a search: its sampled params, its rungs' steps, and what each rung processed measured."""

    index: int
    run_id: str
    params: dict[str, float | int]
    rungs: tuple[int, ...]  # the steps of each rung; the last is the trial's full budget
    objectives: list[float | None] = Field(default_factory=list)  # per rung processed (None: that rung failed)
    state: TrialState = TrialState.running
    error: str | None = None
    metrics: dict[str, float] | None = None  # the final evaluation (eval split) of a completed trial
    train_seconds: float = 0.0  # training wall time summed over its rungs (reused rungs: 0)
    losses: list[float | None] = Field(default_factory=list)  # per rung processed: the slice's loss, if measured
    classes: list[int | None] = Field(default_factory=list)  # per rung processed: distinct classes predicted

    @property
    def rung(self) -> int:
        """The highest rung processed (-1: none yet)."""
        return len(self.objectives) - 1

    @property
    def objective(self) -> float | None:
        """The objective at the highest rung processed (None: no rung yet, or that rung failed)."""
        return self.objectives[-1] if self.objectives else None


class SeenTrial(BaseModel):
    """A trial as a new trial's sampler sees it: its params, its objectives at the rungs it may see (none:
    still running; a None last: that rung failed), and whether those reach its full budget."""

    params: dict[str, float | int]
    objectives: list[float | None] = Field(default_factory=list)
    completed: bool = False


class Job(BaseModel):
    """One rung of one trial to train and evaluate."""

    trial: int
    rung: int


class Ladder(BaseModel):
    """ASHA's decisions as plain data (Li et al. 2020, Algorithm 2): which trial to sample, which rung to
    promote, when the search is finished. Results are processed in each rung's canonical order, whatever order
    they arrive in, so the same results give the same promotions after any restart; the search workflow
    keeps the ladder in its state and carries it through continue-as-new."""

    trials_wanted: int
    max_concurrent: int
    reduction_factor: int  # η; 0 without early stopping
    maximize: bool
    trials: list[Trial] = Field(default_factory=list)
    order: list[list[int]] = Field(default_factory=lambda: [list[int]()])  # per rung: trial indices, canonical order
    processed: list[int] = Field(default_factory=lambda: [0])  # per rung: how many of `order` are processed
    started: list[int] = Field(default_factory=lambda: [0])  # per rung: how many of `order` have been started
    arrived: dict[str, float | None] = Field(default_factory=dict)  # "trial:rung" -> objective, not yet processed
    sampling_lag: int | None = None  # None: the original gate (see the module's docstring)
    free_samples: int = 0  # trials sampled without waiting for any result (with `sampling_lag` set)
    decided_at: dict[str, int] = Field(default_factory=dict)  # "trial:rung" -> results of the rung below, when promoted
    loss_ties: bool = False  # equal objectives ranked by the slice's loss (ladders made before: by trial index)
    details: dict[str, tuple[float | None, int | None]] = Field(default_factory=dict)  # "trial:rung" -> (loss, classes)

    # --- what may start ---

    def can_sample(self) -> bool:
        """Whether trial `len(trials)` may be sampled now: trials remain to sample and the results its sampler
        sees (`sampler_view`) are all processed."""
        index = len(self.trials)
        if index >= self.trials_wanted:
            return False
        if self.sampling_lag is None:
            return self.processed[0] >= index - self.max_concurrent + 1
        return all(done >= wanted for done, wanted in zip(self.processed, self._visible(index), strict=True))

    def _visible(self, index: int) -> list[int]:
        """Per rung, how many of `order[rung]` trial `index`'s sampler sees (a prefix, canonical)."""
        assert self.sampling_lag is not None
        if index < self.free_samples:
            return [0] * len(self.order)
        counts = [max(index - self.sampling_lag + 1, 0)]
        for rung in range(1, len(self.order)):
            cut, count = counts[-1] - self.sampling_lag, 0
            while count < len(self.order[rung]) and self.decided_at[f"{self.order[rung][count]}:{rung}"] <= cut:
                count += 1
            counts.append(count)
        return counts

    def sampler_history(self) -> list[tuple[dict[str, float | int], float | None, bool]]:
        """(params, rung-0 objective, known) of every trial sampled so far, for sampling the next one with the
        original gate (`sampling_lag` None); the objective is known only for trials at least max_concurrent
        before it (what `can_sample` waits for)."""
        index = len(self.trials)
        return [
            (
                t.params,
                t.objectives[0] if t.index <= index - self.max_concurrent else None,
                t.index <= index - self.max_concurrent,
            )
            for t in self.trials
        ]

    def sampler_view(self) -> list[SeenTrial]:
        """Every trial sampled so far with the rung results the next trial's sampler sees (`can_sample` has
        waited for them): a prefix of its objectives, and whether that prefix reaches its full budget."""
        visible = self._visible(len(self.trials))
        seen = [0] * len(self.trials)
        for rung, count in enumerate(visible):
            for index in self.order[rung][:count]:
                seen[index] = rung + 1
        return [
            SeenTrial(
                params=t.params, objectives=t.objectives[: seen[t.index]], completed=seen[t.index] == len(t.rungs)
            )
            for t in self.trials
        ]

    def add_trial(self, run_id: str, params: dict[str, float | int], rungs: tuple[int, ...]) -> Job:
        """Append a newly sampled trial and return its first job (rung 0)."""
        index = len(self.trials)
        self.trials.append(Trial(index=index, run_id=run_id, params=params, rungs=rungs))
        self.order[0].append(index)
        self.started[0] += 1
        return Job(trial=index, rung=0)

    def next_promotion(self) -> Job | None:
        """The promoted rung to train next, highest rung first."""
        self._promote_leader()
        for rung in range(len(self.order) - 1, 0, -1):
            if self.started[rung] < len(self.order[rung]):
                trial = self.order[rung][self.started[rung]]
                self.started[rung] += 1
                return Job(trial=trial, rung=rung)
        return None

    def _promote_leader(self) -> None:
        """When every trial is sampled and every result processed but no trial reached its full budget (too
        few trials for the top rungs' 1/η), the best trial of the highest rung goes on: a search always ends
        with a winner trained to its budget."""
        idle = len(self.trials) == self.trials_wanted and all(
            p == len(o) for p, o in zip(self.processed, self.order, strict=True)
        )
        if not idle or any(t.state is TrialState.completed for t in self.trials):
            return
        paused = [t for t in self.trials if t.state is TrialState.paused]
        if paused:
            top = max(t.rung for t in paused)
            leader = min((t for t in paused if t.rung == top), key=lambda t: self._rank(t, top))
            self._promote_to_next(leader, top)

    def _promote_to_next(self, trial: Trial, rung: int) -> None:
        if len(self.order) == rung + 1:
            self.order.append([])
            self.processed.append(0)
            self.started.append(0)
        self.order[rung + 1].append(trial.index)
        self.decided_at[f"{trial.index}:{rung + 1}"] = self.processed[rung]
        trial.state = TrialState.running

    @property
    def promotions(self) -> list[str]:
        """Every promotion as "trial:from_rung->to_rung", by rung and in decision order within a rung. Within a
        rung that order is canonical; how the rungs' decisions interleave depends on when results arrived,
        so it is not kept."""
        return [f"{index}:{rung - 1}->{rung}" for rung in range(1, len(self.order)) for index in self.order[rung]]

    @property
    def unstarted(self) -> bool:
        """Trials still to sample, or promotions still to start."""
        return len(self.trials) < self.trials_wanted or any(
            s < len(o) for s, o in zip(self.started, self.order, strict=True)
        )

    def finished(self) -> bool:
        """True when no trial is left to sample, start or process. When everything is processed and no trial
        reached its full budget, the best trial of the highest rung is promoted first, so this is False until
        it has run."""
        self._promote_leader()
        return (
            not self.unstarted
            and not self.arrived
            and all(p == len(o) for p, o in zip(self.processed, self.order, strict=True))
        )

    # --- results ---

    def record(
        self,
        job: Job,
        objective: float | None,
        *,
        error: str | None = None,
        loss: float | None = None,
        classes: int | None = None,
    ) -> None:
        """A rung's result arrived (any order); `process` takes it in canonical order. `loss`: the slice's loss
        there (ranks equal objectives); `classes`: how many classes the model predicted on the slice."""
        if error is not None:
            self.trials[job.trial].error = error
        self.arrived[f"{job.trial}:{job.rung}"] = objective
        if loss is not None or classes is not None:
            self.details[f"{job.trial}:{job.rung}"] = (loss, classes)
        self._process()

    def _process(self) -> None:
        progressed = True
        while progressed:
            progressed = False
            for rung in range(len(self.order)):
                while self.processed[rung] < len(self.order[rung]):
                    index = self.order[rung][self.processed[rung]]
                    key = f"{index}:{rung}"
                    if key not in self.arrived:
                        break
                    self._take(self.trials[index], rung, self.arrived.pop(key), self.details.pop(key, (None, None)))
                    self.processed[rung] += 1
                    progressed = True
                    self._promote(rung)

    def _take(self, trial: Trial, rung: int, objective: float | None, detail: tuple[float | None, int | None]) -> None:
        # A trial carried over from a ladder without losses has none for its earlier rungs.
        missing = len(trial.objectives) - len(trial.losses)
        trial.losses.extend([None] * missing + [detail[0]])
        trial.classes.extend([None] * (len(trial.objectives) - len(trial.classes)) + [detail[1]])
        trial.objectives.append(objective)
        if objective is None:
            trial.state = TrialState.failed
        elif rung == len(trial.rungs) - 1:
            trial.state = TrialState.completed
        else:
            trial.state = TrialState.paused

    def _promote(self, rung: int) -> None:
        """Promote the rung's top floor(n/η) (`_rank`) that are paused there."""
        if not self.reduction_factor:
            return
        ranked, keep = self._ranked(rung)
        for trial in ranked[:keep]:
            if trial.state is TrialState.paused and trial.rung == rung:
                self._promote_to_next(trial, rung)

    def _ranked(self, rung: int) -> tuple[list[Trial], int]:
        """The rung's processed trials with an objective, best first (`_rank`), and how many of them the top
        floor(n/η) of all processed results there holds."""
        done = [self.trials[i] for i in self.order[rung][: self.processed[rung]]]
        ranked = sorted((t for t in done if t.objectives[rung] is not None), key=lambda t: self._rank(t, rung))
        return ranked, len(done) // self.reduction_factor

    def _key(self, value: float | None) -> float:
        assert value is not None
        return -value if self.maximize else value

    def _rank(self, trial: Trial, rung: int) -> tuple[float, float, int]:
        """A trial's place at a rung, best first: its objective there, then (`loss_ties`) the slice's loss,
        then its index."""
        loss = trial.losses[rung] if self.loss_ties and rung < len(trial.losses) else None
        return self._key(trial.objectives[rung]), math.inf if loss is None else loss, trial.index

    def stop_paused(self) -> list[Trial]:
        """At the end: every trial still paused at a rung is stopped (returned, to prune its checkpoints)."""
        stopped = [t for t in self.trials if t.state is TrialState.paused]
        for trial in stopped:
            trial.state = TrialState.stopped
        return stopped

    def best(self) -> Trial | None:
        """The completed trial with the best objective at its full budget (ties as in `_rank`)."""
        completed = [t for t in self.trials if t.state is TrialState.completed and t.objective is not None]
        return min(completed, key=lambda t: self._rank(t, t.rung), default=None)
