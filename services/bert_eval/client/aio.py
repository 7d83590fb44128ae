"""`AsyncClient` and `AsyncExperimentHandle`: bert-eval from asyncio code, built on the operations in
`temporal/submit.py` (the ones the CLI uses)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd
import temporalio.client
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from bert_eval.client import frames
from bert_eval.client.connection import client_settings
from bert_eval.client.errors import ClientConnectionError, ExperimentFailedError, PredictionError
from bert_eval.client.progress import ProgressBar, open_progress_bar
from bert_eval.core.records import ExperimentSummary, TrainingProgress
from bert_eval.experiment import load_experiment, parse_experiment
from bert_eval.settings import Settings, TemporalSettings, task_queues
from bert_eval.spec import Experiment, normalize_id
from bert_eval.temporal.client import connect, ensure_search_attributes
from bert_eval.temporal.failures import root_cause
from bert_eval.temporal.names import coordinator_workflow_id, release_prefix
from bert_eval.temporal.payloads import (
    CoordinatorInput,
    ExperimentResult,
    PredictInput,
    RunStatus,
    SearchOutcome,
)
from bert_eval.temporal.submit import (
    check_runs_dir,
    experiment_status,
    missing_workers,
    predict,
    start_experiment,
    watch,
)

__all__ = ["AsyncClient", "AsyncExperimentHandle", "ExperimentSource", "ExperimentStatus"]

ExperimentSource: TypeAlias = "str | Path | Mapping[str, Any] | Experiment"


@dataclass(frozen=True)
class ExperimentStatus:
    """Where an experiment stands.

    `state`: the coordinator workflow's state (`running`, `completed`, `failed`, `canceled`,
    `terminated`, `timed_out`); `runs`: each run's phase, metrics or error (empty while no eval worker
    answers); `progress`: live training progress per run id; `summary`: the statistics, once every run
    has ended; `search`: a search's leaderboard."""

    experiment_id: str
    state: str
    runs: list[RunStatus] = field(default_factory=list)
    progress: dict[str, TrainingProgress] = field(default_factory=dict)
    summary: ExperimentSummary | None = None
    search: SearchOutcome | None = None

    @property
    def done(self) -> bool:
        """The experiment has ended (its result, or its failure, is final)."""
        return self.state != "running"


class AsyncClient:
    """bert-eval's client for asyncio code: submit experiments, follow them, read their results, predict.

    Create it with `await AsyncClient.connect(...)`. `Client` has the same methods for synchronous code
    and notebooks."""

    def __init__(
        self, temporal: temporalio.client.Client, settings: Settings, temporal_settings: TemporalSettings
    ) -> None:
        self.temporal = temporal
        self.settings = settings
        self.temporal_settings = temporal_settings

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        *,
        namespace: str | None = None,
        api_key: str | None = None,
        tls: bool | None = None,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        tls_server_name: str | None = None,
        task_queue_prefix: str | None = None,
        runs_dir: str | Path | None = None,
    ) -> AsyncClient:
        """Connect to Temporal. Each argument left out comes from the environment (`TEMPORAL_ADDRESS`,
        `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS*`, `BERT_EVAL_TASK_QUEUE_PREFIX`,
        `BERT_EVAL_RUNS_DIR`), else its default (`localhost:7233`, `default`, no TLS, `./bert_runs`).

        Raises:
            ValueError: an argument is invalid, or `task_queue_prefix` differs from the process's
                `BERT_EVAL_TASK_QUEUE_PREFIX`.
            ClientConnectionError: Temporal does not answer at the address (or refuses the namespace
                or credentials).
        """
        temporal_settings, settings = client_settings(
            address=address,
            namespace=namespace,
            api_key=api_key,
            tls=tls,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_server_name=tls_server_name,
            task_queue_prefix=task_queue_prefix,
            runs_dir=runs_dir,
        )
        try:
            temporal = await connect(temporal_settings)
        except (RuntimeError, OSError) as exc:
            raise ClientConnectionError(
                f"cannot reach Temporal at {temporal_settings.address} "
                f"(namespace {temporal_settings.namespace}): {exc}. "
                "Start it (`bert-eval up`) or pass address= (TEMPORAL_ADDRESS)"
            ) from None
        return cls(temporal, settings, temporal_settings)

    async def submit(self, experiment: ExperimentSource) -> AsyncExperimentHandle:
        """Submit an experiment, or attach to it if it is already running (same experiment id).

        Parameters:
            experiment: an experiment file's path, the file's content as a dict, or an `Experiment`.

        Returns:
            The experiment's handle.

        Raises:
            ExperimentFileError (a ValueError): the experiment is invalid; the message names the run and field.
            SubmissionError (a ValueError): a run id's directory holds another spec's results (nothing submitted).
            MissingSearchAttributesError: the namespace lacks bert-eval's search attributes and they could
                not be added (the message gives the commands).
        """
        parsed = _experiment(experiment)
        check_runs_dir(parsed, self.settings.runs_dir)
        await ensure_search_attributes(self.temporal)
        handle = await start_experiment(self.temporal, parsed, self.settings)
        return AsyncExperimentHandle(self, parsed.id, handle, experiment=parsed)

    async def experiment(self, experiment_id: str) -> AsyncExperimentHandle:
        """The handle of an experiment submitted earlier (by this client, the CLI or anyone).

        Raises:
            ValueError: the id is malformed, or no such experiment exists in this namespace.
        """
        experiment_id = normalize_id(experiment_id, what="experiment id")
        prefix = release_prefix(task_queues(self.settings)[1])
        handle = self.temporal.get_workflow_handle(
            coordinator_workflow_id(experiment_id, prefix=prefix), result_type=ExperimentResult
        )
        try:
            await handle.describe(rpc_timeout=timedelta(seconds=10))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise ValueError(f"no experiment {experiment_id!r} in namespace {self.temporal.namespace}") from None
            raise
        return AsyncExperimentHandle(self, experiment_id, handle)

    async def predict(
        self,
        run_id: str,
        texts: str | Sequence[str],
        *,
        max_seq_length: int | None = None,
        batch_size: int = 64,
        use_gpu: bool = True,
    ) -> pd.DataFrame:
        """Label texts with a trained run's final model, on the eval workers.

        Parameters:
            run_id: a run that finished training.
            texts: one text or several (a sentence pair: `"first\\tsecond"`).
            max_seq_length: tokens per text; default the run's training length.
            batch_size, use_gpu: how the eval worker runs the model.

        Returns:
            One row per text: `text`, `label` (the dataset's label name), and `label_id`, `confidence`
            (classification) or `score` (regression).

        Raises:
            ValueError: no texts, or an invalid argument.
            PredictionError: the prediction failed (e.g. the run has no final model); the message says why.
        """
        request = PredictInput(
            run_id=run_id,
            texts=(texts,) if isinstance(texts, str) else tuple(texts),
            max_seq_length=max_seq_length,
            batch_size=batch_size,
            use_gpu=use_gpu,
        )
        try:
            result = await predict(self.temporal, request)
        except WorkflowFailureError as exc:
            raise PredictionError(request.run_id, root_cause(exc, with_type=False)) from None
        return frames.predictions_frame(result)

    async def missing_workers(self) -> list[str]:
        """One line per task queue of this deployment that no live worker polls (empty when all are served)."""
        return await missing_workers(self.temporal, tuple(reversed(task_queues(self.settings))))


class AsyncExperimentHandle:
    """One experiment: its status, its result, its records as DataFrames."""

    def __init__(
        self, client: AsyncClient, experiment_id: str, handle: WorkflowHandle, *, experiment: Experiment | None = None
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.workflow = handle
        self._experiment = experiment
        self._result: ExperimentResult | None = None

    def __repr__(self) -> str:
        return f"<experiment {self.experiment_id} (workflow {self.workflow.id})>"

    async def status(self) -> ExperimentStatus:
        """Where the experiment stands now (see `ExperimentStatus`); does not wait."""
        latest = self.client.temporal.get_workflow_handle(self.workflow.id)
        description = await latest.describe(rpc_timeout=timedelta(seconds=10))
        state = description.status.name.lower() if description.status is not None else "unknown"
        found = await experiment_status(self.client.temporal, self.experiment_id)
        if found is None:
            return ExperimentStatus(self.experiment_id, state)
        status, progress = found
        return ExperimentStatus(self.experiment_id, state, status.runs, progress, status.summary, status.search)

    async def wait(self, *, progress: bool = False, timeout: float | None = None) -> ExperimentResult:
        """Wait for the experiment's result.

        Parameters:
            progress: show a progress bar (tqdm's where installed, a widget in Jupyter; else rich's),
                and warn about task queues no worker polls.
            timeout: seconds to wait at most (None: no limit); the experiment goes on either way.

        Returns:
            The `ExperimentResult` (every run's record, the statistics, a search's trials).

        Raises:
            ExperimentFailedError: the experiment failed, was cancelled or terminated.
            TimeoutError: not finished within `timeout`.
        """
        bar = self._open_bar() if progress else None
        try:
            return await self.wait_with(bar, timeout=timeout)
        finally:
            if bar is not None:
                bar.close()

    async def wait_with(self, bar: ProgressBar | None, *, timeout: float | None = None) -> ExperimentResult:
        """`wait`, reporting to `bar` (opened and closed by the caller; None: no progress): any display that
        implements `ProgressBar`. The synchronous handle opens its bar on the caller's thread, where
        Jupyter shows the cell's output."""
        if self._result is not None and bar is not None:
            bar.finish(self._result)
        if self._result is None:
            try:
                self._result = await asyncio.wait_for(self._follow(bar), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"experiment {self.experiment_id}: not finished after {timeout} s; it goes on"
                ) from None
            except WorkflowFailureError as exc:
                raise ExperimentFailedError(self.experiment_id, root_cause(exc, with_type=False)) from None
        return self._result

    async def _follow(self, bar: ProgressBar | None) -> ExperimentResult:
        if bar is None:
            result: ExperimentResult = await self.workflow.result()
            return result

        def on_missing_workers(lines: list[str]) -> None:
            for line in lines:
                bar.note(f"waiting: {line}")

        result = await watch(self.client.temporal, self.workflow, bar.update, on_missing_workers=on_missing_workers)
        bar.finish(result)
        return result

    def _open_bar(self) -> ProgressBar:
        """The default progress bar for this experiment (counting its search's trials, when known)."""
        trials = self._experiment.search.trials if self._experiment and self._experiment.search else None
        return open_progress_bar(f"experiment {self.experiment_id}", trials=trials)

    async def results(self) -> ExperimentResult:
        """The experiment's result (waiting for it, without a progress bar). Raises as `wait` does."""
        return await self.wait()

    async def cancel(self) -> None:
        """Ask the experiment to stop: runs in flight are cancelled, and `wait` then raises
        `ExperimentFailedError`. Finished runs keep their results on the runs volume."""
        await self.client.temporal.get_workflow_handle(self.workflow.id).cancel()

    async def experiment(self) -> Experiment | None:
        """The experiment as submitted (read from the workflow's input when this handle did not submit
        it); None when its input is not bert-eval's own (a reference-design submission)."""
        if self._experiment is None:
            async for event in self.client.temporal.get_workflow_handle(self.workflow.id).fetch_history_events():
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                try:
                    [submitted] = await self.client.temporal.data_converter.decode(payloads, [CoordinatorInput])
                except ValueError:
                    return None
                self._experiment = submitted.experiment
                break
        return self._experiment

    async def runs_df(self) -> pd.DataFrame:
        """One row per run (waits for the result): run_id, config, seed, the settings that differ between
        runs (`train.<field>`; a search's trial params), state, reused, steps, resumes, train_seconds,
        final_loss, error, each metric and its interval bounds (`<metric>_low`, `<metric>_high`)."""
        return frames.runs_frame(await self.results(), await self.experiment())

    async def configs_df(self) -> pd.DataFrame:
        """One row per configuration (waits for the result): config, metric, n (seeds), mean, std, low and
        high (95% t-interval of the mean), min, max, mark, p_value, best, not_worse, runs."""
        return frames.configs_frame(await self.results())

    async def trials_df(self) -> pd.DataFrame:
        """One row per search trial (waits for the result): trial, run_id, its params, rung, steps, state,
        objective, best, train_seconds, error, final metrics. Empty for an experiment without `search:`."""
        return frames.trials_frame(await self.results())

    async def cells_df(self) -> pd.DataFrame:
        """The evaluation matrix (waits for the result): one row per evaluation of a run (run_id, config,
        dataset, split, examples, primary, metrics, interval bounds)."""
        return frames.cells_frame(await self.results())


def _experiment(source: ExperimentSource) -> Experiment:
    """A canonical experiment from a path, a parsed file or an Experiment (ExperimentFileError if invalid)."""
    if isinstance(source, Experiment):
        return source.canonical()
    if isinstance(source, Mapping):
        return parse_experiment(dict(source))
    if isinstance(source, (str, Path)):
        return load_experiment(source)
    raise TypeError(f"submit: expected an experiment file's path, a dict or an Experiment, got {type(source).__name__}")
