"""A search, run by the coordinator (workflow code: deterministic, every side effect an activity or a child).

One snapshot holds every trial's rows (the template's selection less the held-out `search` slice). Trials
are sampled one at a time by the `suggest_trial` activity, each from the history the ladder allows
(core/search/asha.py: a fixed lag, none for samplers that ignore results), so sampling is recorded and
replayed, never redone. Each rung of a trial is a training
child that pauses at the rung's step (the next rung resumes from that checkpoint), then `evaluate_rung` on
the eval pool while other trials train. At most `max_concurrent` rungs train at once. A trial trained to
its full budget is evaluated on the experiment's eval split. At the end, trials still paused are stopped and
keep only their last rung's checkpoint.

The ladder is plain data: past `search_history_limit` events the search stops starting work, lets what is in
flight end, and continues as new with the ladder in its input.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from bert_eval.core.data.snapshot import SEARCH_TABLE
    from bert_eval.core.records import EvalResult, SnapshotResult
    from bert_eval.core.search.asha import Job, Ladder, Trial, TrialState
    from bert_eval.core.search.rungs import RungResult
    from bert_eval.core.search.sampling import free_samples
    from bert_eval.search import (
        SearchFlag,
        check_search,
        max_steps,
        rung_steps,
        search_flags,
        search_holdout,
        trial_id,
        trial_spec,
    )
    from bert_eval.spec import Experiment, RunSpec, SearchSpec
    from bert_eval.temporal.activities import EvalActivities
    from bert_eval.temporal.calls import activity_of_run, run_attributes, snapshot_of
    from bert_eval.temporal.failures import root_cause
    from bert_eval.temporal.names import INVALID_INPUT, PATCH, TIMEOUTS, WORKFLOW, release_prefix, rung_workflow_id
    from bert_eval.temporal.payloads import (
        CoordinatorInput,
        EvalRunInput,
        ExistingRun,
        RungInput,
        SearchOutcome,
        SearchProgress,
        SearchState,
        SearchTrial,
        SuggestInput,
        TrainingInput,
        TrainingResult,
    )

__all__ = ["SearchRunner"]

T = TypeVar("T")


class SearchRunner:
    """The search of one experiment, inside the coordinator workflow (module docstring: how it runs).

    Parameters
    ----------
    experiment : Experiment
        The canonical experiment; its `search` is set and its one run is every trial's template.
    request : CoordinatorInput
        The coordinator's input: heartbeat timeout, history limit, and the `search_state` of a search that
        continued as new (None on the first run).
    """

    def __init__(self, experiment: Experiment, request: CoordinatorInput) -> None:
        assert experiment.search is not None
        self.experiment, self.request = experiment, request
        self.search: SearchSpec = experiment.search
        self.template = experiment.runs[0].model_copy(update={"holdout": search_holdout(experiment.search)})
        self.state: SearchState | None = request.search_state
        self._training = 0  # rungs training now
        self._in_flight = 0  # jobs started, not yet recorded
        self._changes = 0  # bumped whenever a job frees a slot or records a result

    # --- the search ---

    async def run(self) -> SearchOutcome | SearchState:
        """Take the snapshot (first run only), then sample, train, evaluate and promote trials until the ladder
        is finished, and record the outcome (`experiments/<id>.search.json`).

        Returns
        -------
        SearchOutcome
            Every trial, its rungs and state, the promotions and the best trial, once the search is done.
        SearchState
            The ladder and snapshot to continue as new with, once the history passed its limit (nothing in
            flight is lost: the search stops starting work and waits for what runs).

        Raises
        ------
        ApplicationError
            Non-retryable (`INVALID_INPUT`) when the data cannot support the search (its task does not report
            the objective's metric, or too few training rows for the held-out slice); activity and child
            failures of a trial fail that trial, not the search.
        """
        if self.state is None:
            snapshot = await snapshot_of(self.template, heartbeat_timeout_s=self.request.heartbeat_timeout_s)
            self._check(snapshot)
            ladder = Ladder(
                trials_wanted=self.search.trials,
                max_concurrent=self.search.max_concurrent,
                reduction_factor=self.search.scheduler.reduction_factor if self.search.scheduler.type == "asha" else 0,
                maximize=self.search.objective.maximize,
            )
            if workflow.patched(PATCH.search_sampling_lag):
                lag = self.search.max_concurrent + 1
                ladder.sampling_lag, ladder.free_samples = lag, free_samples(self.search, lag)
            ladder.loss_ties = workflow.patched(PATCH.search_loss_ties)
            self.state = SearchState(snapshot=snapshot, ladder=ladder)
        ladder = self.state.ladder
        tasks: list[asyncio.Task[None]] = []
        while not ladder.finished():
            draining = self._history_full()
            while not draining and self._training < self.search.max_concurrent:
                job = ladder.next_promotion()
                if job is None and ladder.can_sample():
                    job = await self._sample(ladder)
                if job is None:
                    break
                self._training += 1
                self._in_flight += 1
                tasks.append(asyncio.create_task(self._job(job)))
            if draining and self._in_flight == 0:
                workflow.logger.info(
                    "search %s: continuing as new after %d trials", self.experiment.id, len(ladder.trials)
                )
                await self._record()
                return self.state.model_copy(update={"continued": self.state.continued + 1})
            seen = self._changes
            await workflow.wait_condition(functools.partial(self._changed_since, seen))
        await asyncio.gather(*tasks)
        for trial in ladder.stop_paused():
            await self._call(
                trial.run_id,
                EvalActivities.keep_last_checkpoint,
                trial.run_id,
                start_to_close=TIMEOUTS.find_existing_start_to_close,
            )
        await self._progress()
        return await self._record(finished=True)

    async def _progress(self) -> None:
        """The trial counts and best objective, to the eval worker's metrics (one small activity per result)."""
        assert self.state is not None
        ladder = self.state.ladder
        counts = {state.value: sum(t.state is state for t in ladder.trials) for state in TrialState}
        top = max((t.rung for t in ladder.trials if t.objective is not None), default=-1)
        measured = [t.objective for t in ladder.trials if t.objective is not None and t.rung == top]
        best = (max(measured) if ladder.maximize else min(measured)) if measured else None  # the top rung's only
        await self._call(
            self.experiment.id,
            EvalActivities.record_search_progress,
            SearchProgress(
                experiment_id=self.experiment.id, metric=self.search.objective.metric, trials=counts, best=best
            ),
            start_to_close=TIMEOUTS.find_existing_start_to_close,
        )

    async def _record(self, *, finished: bool = False) -> SearchOutcome:
        """The outcome so far, written beside the experiment's record for reports."""
        outcome = self.outcome(finished=finished)
        await self._call(
            self.experiment.id,
            EvalActivities.record_search,
            outcome,
            start_to_close=TIMEOUTS.record_experiment_start_to_close,
        )
        return outcome

    async def _call(
        self, run_id: str, method: Callable[[Any, Any], Awaitable[T]], arg: Any, *, start_to_close: timedelta
    ) -> T:
        """An activity of the search, with a heartbeat timeout: activities heartbeat while they work, so one
        lost with its worker is retried within seconds, not at its start-to-close timeout."""
        return await activity_of_run(
            run_id,
            method,
            arg,
            start_to_close=start_to_close,
            heartbeat_timeout=timedelta(seconds=self.request.heartbeat_timeout_s),
        )

    def _changed_since(self, seen: int) -> bool:
        return self._changes != seen

    def _check(self, snapshot: SnapshotResult) -> None:
        rows = snapshot.splits.get("train", 0) + snapshot.splits.get(SEARCH_TABLE, 0)
        try:
            check_search(self.search, self.experiment.runs[0], task=snapshot.dataset_schema.task, train_rows=rows)
        except ValueError as exc:
            raise ApplicationError(f"invalid experiment: {exc}", type=INVALID_INPUT, non_retryable=True) from None

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.get_current_history_length() > self.request.search_history_limit or info.is_continue_as_new_suggested()
        )

    async def _sample(self, ladder: Ladder) -> Job:
        index = len(ladder.trials)
        params: dict[str, float | int] = await self._call(
            self.experiment.id,
            EvalActivities.suggest_trial,
            _suggest_input(self.experiment.id, self.search, ladder),
            start_to_close=TIMEOUTS.suggest_start_to_close,
        )
        spec = self._spec_of(trial_id(self.experiment.id, index), params)
        assert self.state is not None
        rungs = rung_steps(self.search.scheduler, max_steps(spec.train, self.state.snapshot.splits["train"]))
        return ladder.add_trial(spec.id, params, rungs)

    def _spec_of(self, run_id: str, params: dict[str, float | int]) -> RunSpec:
        return trial_spec(self.template, params, run_id=run_id, holdout=self.template.holdout)

    # --- one rung of one trial ---

    async def _job(self, job: Job) -> None:
        assert self.state is not None
        trial = self.state.ladder.trials[job.trial]
        spec = self._spec_of(trial.run_id, trial.params)
        step, final = trial.rungs[job.rung], job.rung == len(trial.rungs) - 1
        slot = _Slot(self)
        try:
            rung = await self._rung(spec, job.rung, step, final=final, trial=trial, slot=slot)
            slot.free()
            if final:
                trial.metrics = await self._final_evaluation(spec)
            metric = self.search.objective.metric
            if self.state.constant is None and metric in rung.constant:
                self.state = self.state.model_copy(update={"constant": rung.constant[metric]})
            self.state.ladder.record(job, rung.metrics[metric], loss=rung.loss, classes=rung.predicted_classes)
        except (ActivityError, ChildWorkflowError, ApplicationError) as exc:
            self.state.ladder.record(job, None, error=root_cause(exc))
        finally:
            slot.free()
        try:
            await self._progress()
        finally:
            self._in_flight -= 1
            self._changes += 1

    async def _rung(self, spec: RunSpec, rung: int, step: int, *, final: bool, trial: Trial, slot: _Slot) -> RungResult:
        """The rung's objective: recorded earlier, or trained (from the previous rung's checkpoint) and measured."""
        assert self.state is not None
        snapshot, eid = self.state.snapshot, self.experiment.id
        found: RungResult | None = await self._call(
            spec.id,
            EvalActivities.find_rung,
            RungInput(experiment_id=eid, run=spec, step=step, snapshot=snapshot),
            start_to_close=TIMEOUTS.find_existing_start_to_close,
        )
        if found is not None:
            return found
        queue = workflow.info().task_queue
        trained: TrainingResult = await workflow.execute_child_workflow(
            WORKFLOW.training,
            TrainingInput(
                experiment_id=eid,
                run=spec,
                snapshot=snapshot,
                heartbeat_timeout_s=self.request.heartbeat_timeout_s,
                eval_task_queue=queue,
                stop_at_step=None if final else step,
            ),
            result_type=TrainingResult,
            id=rung_workflow_id(spec.id, rung, prefix=release_prefix(queue)),
            task_queue=self.request.training_task_queue,
            search_attributes=run_attributes(eid, spec.id),
        )
        trial.train_seconds = round(trial.train_seconds + (trained.summary.call_seconds or 0.0), 3)
        slot.free()  # the rung is measured on the eval pool while another trains
        return await self._call(
            spec.id,
            EvalActivities.evaluate_rung,
            RungInput(experiment_id=eid, run=spec, step=step, snapshot=snapshot, model_dir=trained.summary.model_dir),
            start_to_close=TIMEOUTS.evaluate_start_to_close,
        )

    async def _final_evaluation(self, spec: RunSpec) -> dict[str, float]:
        """A completed trial's metrics on the experiment's eval split (measured once, reused after)."""
        assert self.state is not None
        existing: ExistingRun = await self._call(
            spec.id, EvalActivities.find_existing_run, spec, start_to_close=TIMEOUTS.find_existing_start_to_close
        )
        if existing.evaluation is not None:
            return existing.evaluation.metrics
        if existing.summary is None:
            raise ApplicationError(
                f"run {spec.id}: its training completed but no final model was found", type=INVALID_INPUT
            )
        evaluation: EvalResult = await self._call(
            spec.id,
            EvalActivities.evaluate_model,
            EvalRunInput(
                experiment_id=self.experiment.id,
                run_id=spec.id,
                model_dir=existing.summary.model_dir,
                snapshot=self.state.snapshot,
                request=spec.primary_eval,
                heartbeat_timeout_s=self.request.heartbeat_timeout_s,
            ),
            start_to_close=TIMEOUTS.evaluate_start_to_close,
        )
        return evaluation.metrics

    # --- what it reports ---

    def outcome(self, *, finished: bool = False) -> SearchOutcome:
        """What the search has found so far (the coordinator's query reads it): every trial with its rung,
        state and objectives, the promotions, the best trial; `finished` once the ladder is done."""
        ladder = self.state.ladder if self.state is not None else None
        trials = ladder.trials if ladder is not None else []
        best = ladder.best() if ladder is not None else None
        budget = max_steps(self.template.train, self.state.snapshot.splits["train"]) if self.state is not None else 0
        return SearchOutcome(
            experiment_id=self.experiment.id,
            metric=self.search.objective.metric,
            maximize=self.search.objective.maximize,
            rungs=list(rung_steps(self.search.scheduler, budget)) if budget else [],
            trials=[
                SearchTrial(
                    trial=t.index,
                    run_id=t.run_id,
                    params=t.params,
                    rung=t.rung,
                    steps=t.rungs[t.rung] if t.rung >= 0 else 0,
                    state=t.state,
                    objective=t.objective,
                    objectives=list(t.objectives),
                    metrics=t.metrics,
                    train_seconds=t.train_seconds,
                    error=t.error,
                    predicted_classes=t.classes[-1] if t.classes else None,
                )
                for t in trials
            ],
            best=best.run_id if best is not None else None,
            promotions=list(ladder.promotions) if ladder is not None else [],
            continued=self.state.continued if self.state is not None else 0,
            finished=finished,
            flags=self._flags(),
        )

    def _flags(self) -> list[SearchFlag]:
        if self.state is None:
            return []
        ladder = self.state.ladder
        best = ladder.best()
        return search_flags(
            metric=self.search.objective.metric,
            maximize=self.search.objective.maximize,
            slice_rows=self.state.snapshot.splits.get(SEARCH_TABLE, 0),
            objectives=[t.objectives for t in ladder.trials],
            classes=[t.classes for t in ladder.trials],
            constant=self.state.constant,
            best=best.index if best is not None else None,
        )


def _suggest_input(experiment_id: str, search: SearchSpec, ladder: Ladder) -> SuggestInput:
    """What the next trial's sampler is given: the ladder's view, or for a ladder made before the sampling lag,
    its rung-0 history."""
    index = len(ladder.trials)
    if ladder.sampling_lag is None:
        return SuggestInput(experiment_id=experiment_id, search=search, index=index, history=ladder.sampler_history())
    return SuggestInput(experiment_id=experiment_id, search=search, index=index, history=[], seen=ladder.sampler_view())


class _Slot:
    """A job's place among the `max_concurrent` rungs training at once, given back once."""

    def __init__(self, runner: SearchRunner) -> None:
        self._runner, self._held = runner, True

    def free(self) -> None:
        if self._held:
            self._held = False
            self._runner._training -= 1
            self._runner._changes += 1
