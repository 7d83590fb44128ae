"""`Client` and `ExperimentHandle`: `AsyncClient`'s methods for synchronous code and notebooks.

Each client runs its coroutines on a private event loop on a thread of its own, so it works where an
event loop is already running (Jupyter's) and never calls `asyncio.run` there."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pandas as pd

from bert_eval.client._loop import LoopThread
from bert_eval.client.aio import AsyncClient, AsyncExperimentHandle, ExperimentSource, ExperimentStatus
from bert_eval.settings import Settings
from bert_eval.spec import Experiment
from bert_eval.temporal.payloads import ExperimentResult

__all__ = ["Client", "ExperimentHandle"]


class Client:
    """bert-eval's client: submit experiments, follow them, read their results as DataFrames, predict.

    `Client()` connects at once, with the environment's settings (`TEMPORAL_ADDRESS`, ...) or the
    arguments given (see `AsyncClient.connect`, which takes the same ones). Close it with `close()` or
    use it in a `with` block.

    Raises:
        ValueError: an argument is invalid.
        ClientConnectionError: Temporal does not answer at the address.
    """

    def __init__(
        self,
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
    ) -> None:
        self._loop = LoopThread()
        try:
            self._client = self._loop.run(
                AsyncClient.connect(
                    address,
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
            )
        except BaseException:
            self._loop.close()
            raise

    def __repr__(self) -> str:
        temporal = self._client.temporal_settings
        return f"<bert_eval.Client {temporal.address} namespace={temporal.namespace}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def settings(self) -> Settings:
        """The bert-eval settings this client submits with (runs directory, task-queue prefix, ...)."""
        return self._client.settings

    @property
    def aio(self) -> AsyncClient:
        """The asynchronous client underneath (its coroutines run on this client's loop thread only)."""
        return self._client

    def close(self) -> None:
        """Stop the client's loop thread. Experiments go on; a new client can attach to them."""
        self._loop.close()

    def submit(self, experiment: ExperimentSource) -> ExperimentHandle:
        """Submit an experiment (a path, a dict or an `Experiment`), or attach to it if already running.
        Returns its handle; raises as `AsyncClient.submit` does."""
        return ExperimentHandle(self._loop, self._loop.run(self._client.submit(experiment)))

    def experiment(self, experiment_id: str) -> ExperimentHandle:
        """The handle of an experiment submitted earlier. Raises ValueError when there is no such experiment."""
        return ExperimentHandle(self._loop, self._loop.run(self._client.experiment(experiment_id)))

    def predict(
        self,
        run_id: str,
        texts: str | Sequence[str],
        *,
        max_seq_length: int | None = None,
        batch_size: int = 64,
        use_gpu: bool = True,
    ) -> pd.DataFrame:
        """Label texts with a trained run's final model: one row per text (see `AsyncClient.predict`).
        Raises ValueError (bad arguments) or PredictionError (the message says why)."""
        return self._loop.run(
            self._client.predict(run_id, texts, max_seq_length=max_seq_length, batch_size=batch_size, use_gpu=use_gpu)
        )

    def missing_workers(self) -> list[str]:
        """One line per task queue that no live worker polls (empty when all are served)."""
        return self._loop.run(self._client.missing_workers())


class ExperimentHandle:
    """One experiment: `status()`, `wait()`, `results()`, `cancel()`, and its records as DataFrames.
    The methods are those of `AsyncExperimentHandle`, without `await`."""

    def __init__(self, loop: LoopThread, handle: AsyncExperimentHandle) -> None:
        self._loop = loop
        self.aio = handle

    def __repr__(self) -> str:
        return repr(self.aio)

    @property
    def experiment_id(self) -> str:
        """The experiment this handle follows."""
        return self.aio.experiment_id

    @property
    def workflow_id(self) -> str:
        """The experiment's coordinator workflow id (for the Temporal UI or `temporal workflow`)."""
        return self.aio.workflow.id

    def status(self) -> ExperimentStatus:
        """Where the experiment stands now; does not wait."""
        return self._loop.run(self.aio.status())

    def wait(self, *, progress: bool = False, timeout: float | None = None) -> ExperimentResult:
        """Wait for the result, with a progress bar if `progress`; Ctrl-C (a notebook's interrupt) stops
        waiting, not the experiment. Raises ExperimentFailedError, or TimeoutError after `timeout` s."""
        bar = self.aio._open_bar() if progress else None
        try:
            return self._loop.run(self.aio.wait_with(bar, timeout=timeout))
        finally:
            if bar is not None:
                bar.close()

    def results(self) -> ExperimentResult:
        """The experiment's result (waits for it). Raises as `wait` does."""
        return self._loop.run(self.aio.results())

    def cancel(self) -> None:
        """Ask the experiment to stop (runs in flight are cancelled)."""
        self._loop.run(self.aio.cancel())

    def experiment(self) -> Experiment | None:
        """The experiment as submitted (None for a reference-design submission)."""
        return self._loop.run(self.aio.experiment())

    def runs_df(self) -> pd.DataFrame:
        """One row per run; see `AsyncExperimentHandle.runs_df`."""
        return self._loop.run(self.aio.runs_df())

    def configs_df(self) -> pd.DataFrame:
        """One row per configuration; see `AsyncExperimentHandle.configs_df`."""
        return self._loop.run(self.aio.configs_df())

    def trials_df(self) -> pd.DataFrame:
        """One row per search trial; see `AsyncExperimentHandle.trials_df`."""
        return self._loop.run(self.aio.trials_df())

    def cells_df(self) -> pd.DataFrame:
        """The evaluation matrix; see `AsyncExperimentHandle.cells_df`."""
        return self._loop.run(self.aio.cells_df())
