"""The benchmarks' orchestration stack, started through the product alone: a Temporal dev server
(`bert_eval.temporal.devserver.start_dev_server`) and `python -m bert_eval worker <kind>` processes, with
experiments submitted through `bert_eval.temporal.submit.start_experiment`. Nothing here comes from `tests/`.

Workers can be added, killed and replaced while an experiment runs (the recovery and search-kill rows).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paced_worker import PACE_ENV  # type: ignore[import-not-found]  # beside this file

from bert_eval.experiment import parse_experiment
from bert_eval.settings import Settings, TemporalSettings
from bert_eval.spec import Experiment
from bert_eval.temporal.client import connect
from bert_eval.temporal.devserver import WorkerProcess, start_dev_server, stop_processes
from bert_eval.temporal.payloads import ExperimentResult
from bert_eval.temporal.submit import start_experiment

__all__ = ["BackgroundRun", "BenchStack", "free_port"]

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A loopback port nobody listens on now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BackgroundRun:
    """An experiment submitted and awaited in a thread, so that workers can be killed meanwhile."""

    def __init__(self, stack: BenchStack, experiment: dict[str, Any], kwargs: dict[str, Any]) -> None:
        self._outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                self._outcome["result"] = stack.run_experiment(experiment, **kwargs)
            except BaseException as exc:  # re-raised by result()
                self._outcome["error"] = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def result(self, timeout_s: float = 400.0) -> ExperimentResult:
        """The experiment's result. Raises TimeoutError if it has not finished within `timeout_s`, or what
        the submission raised."""
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"experiment not finished after {timeout_s:.0f} s")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]


@dataclass
class BenchStack:
    """A dev server of its own on a free port, its workers, a runs directory and a log directory.

    Create it with `BenchStack.start(...)`; `close()` kills the workers and stops the server.
    """

    address: str
    runs_dir: Path
    data_dir: Path
    log_dir: Path
    server: subprocess.Popen
    workers: list[WorkerProcess] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # every worker's, before its own overrides

    @classmethod
    def start(cls, *, runs_dir: Path, data_dir: Path, log_dir: Path, **extra_env: str) -> BenchStack:
        """Start the dev server (headless, in memory) and wait until it listens; `extra_env` goes to every
        worker started later. Raises DevServerError."""
        port = free_port()
        server = start_dev_server(port=port, ui_port=None, db_file=None, log_file=log_dir / "temporal.log")
        address = f"127.0.0.1:{port}"
        return cls(
            address=address, runs_dir=runs_dir, data_dir=data_dir, log_dir=log_dir, server=server, extra_env=extra_env
        )

    def env(self, **overrides: str) -> dict[str, str]:
        """A worker's environment: this process's, pointed at this stack's server, runs and data."""
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": self.address,
            "BERT_EVAL_RUNS_DIR": str(self.runs_dir),
            "BERT_EVAL_DATA_DIR": str(self.data_dir),
            "BERT_EVAL_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            **self.extra_env,
            **overrides,
        }

    def start_worker(self, kind: str, *, wait: bool = True, step_pace_s: float = 0.0, **env: str) -> WorkerProcess:
        """Start a `kind` ("training" or "eval") worker with `env` added to its environment; wait until it is
        ready unless `wait` is False. `step_pace_s` > 0 makes each training step last at least that long, so
        that a kill "mid-training" lands mid-training on any machine."""
        port = free_port()
        log_file = self.log_dir / f"{kind}-worker-{len(self.workers)}.log"
        if step_pace_s > 0:
            # The same worker with a sleep in its step callback, outside the numerics (the search kill row).
            argv = [str(HERE / "paced_worker.py"), "worker", kind]
            env[PACE_ENV] = str(step_pace_s)
        else:
            argv = ["-m", "bert_eval", "worker", kind]
        worker_env = self.env(BERT_EVAL_METRICS_PORT=str(port), **env)
        with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen([sys.executable, *argv], env=worker_env, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(kind, process, port, log_file)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    async def client(self) -> Any:
        """A Temporal client of this stack's server."""
        return await connect(TemporalSettings(address=self.address))

    def run_experiment(
        self,
        experiment: dict[str, Any] | Experiment,
        *,
        heartbeat_timeout_s: float = 30.0,
        timeout_s: float = 600.0,
        **settings: Any,
    ) -> ExperimentResult:
        """Submit the experiment (with these submission settings) and wait for its result. Raises
        TimeoutError after `timeout_s`, or what the coordinator failed with."""
        parsed = experiment if isinstance(experiment, Experiment) else parse_experiment(experiment)
        submission = Settings(
            runs_dir=self.runs_dir, data_dir=self.data_dir, heartbeat_timeout_s=heartbeat_timeout_s, **settings
        )

        async def go() -> ExperimentResult:
            handle = await start_experiment(await self.client(), parsed, submission)
            return await asyncio.wait_for(handle.result(), timeout=timeout_s)

        return asyncio.run(go())

    def run_in_background(self, experiment: dict[str, Any], **kwargs: Any) -> BackgroundRun:
        """Submit and wait in a thread (see `run_experiment` for the arguments)."""
        return BackgroundRun(self, experiment, kwargs)

    def close(self) -> None:
        """Kill the workers, then stop the server."""
        for worker in self.workers:
            worker.kill()
        stop_processes([self.server], timeout_s=10)
