"""A real Temporal dev server and real worker processes, per test."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bert_eval.experiment import parse_experiment
from bert_eval.settings import Settings, TemporalSettings
from bert_eval.temporal.client import connect
from bert_eval.temporal.submit import start_experiment
from bert_eval.types import Experiment, ExperimentResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, *, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for_http(url: str, process: subprocess.Popen, log_file: Path, *, timeout_s: float) -> None:
    """Until `url` answers 200; fails early, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}:\n{log_file.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s:\n{log_file.read_text()[-4000:]}")


@dataclass
class WorkerProcess:
    kind: str
    process: subprocess.Popen
    metrics_port: int
    log_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        wait_for_http(f"http://127.0.0.1:{self.metrics_port}/readyz", self.process, self.log_file, timeout_s=timeout_s)

    @property
    def holds_training(self) -> bool:
        """This worker started a fine-tune attempt (per its log)."""
        return '"fine-tune started"' in self.log_file.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout_s: float = 120.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        return self.process.returncode

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            return reply.read().decode()


class BackgroundRun:
    def __init__(self, stack: Stack, experiment: dict[str, Any], kwargs: dict[str, Any]) -> None:
        self._outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                self._outcome["result"] = stack.run_experiment(experiment, **kwargs)
            except BaseException as exc:  # reported by result()
                self._outcome["error"] = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def result(self, timeout_s: float = 400.0) -> ExperimentResult:
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"experiment not finished after {timeout_s}s")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]


@dataclass
class Stack:
    address: str
    runs_dir: Path
    data_dir: Path
    log_dir: Path
    server: subprocess.Popen
    workers: list[WorkerProcess] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TEMPORAL_ADDRESS=self.address,
            TEMPORAL_NAMESPACE="default",
            BERT_EVAL_RUNS_DIR=str(self.runs_dir),
            BERT_EVAL_DATA_DIR=str(self.data_dir),
            BERT_EVAL_FORCE_CPU="true",
            BERT_EVAL_LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def start_worker(self, kind: str, *, wait: bool = True, **env: str) -> WorkerProcess:
        port = free_port()
        log_file = self.log_dir / f"{kind}-worker-{len(self.workers)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "bert_eval", "worker", kind],
            env=self.env(BERT_EVAL_METRICS_PORT=str(port), **env),
            stdout=open(log_file, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(kind, process, port, log_file)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def settings(self, **overrides: Any) -> Settings:
        return Settings(runs_dir=self.runs_dir, data_dir=self.data_dir, **overrides)

    def temporal_settings(self) -> TemporalSettings:
        return TemporalSettings(address=self.address, namespace="default")

    async def client(self):  # noqa: ANN201
        return await connect(self.temporal_settings())

    def run_experiment(self, experiment: dict[str, Any] | Experiment, *, heartbeat_timeout_s: float = 30.0, timeout_s: float = 600.0) -> ExperimentResult:
        parsed = experiment if isinstance(experiment, Experiment) else parse_experiment(experiment)

        async def go() -> ExperimentResult:
            client = await self.client()
            handle = await start_experiment(client, parsed, self.settings(heartbeat_timeout_s=heartbeat_timeout_s))
            return await asyncio.wait_for(handle.result(), timeout=timeout_s)

        return asyncio.run(go())

    def run_in_background(self, experiment: dict[str, Any], **kwargs: Any) -> BackgroundRun:
        """Submit and wait in a thread, so the test can kill workers meanwhile."""
        return BackgroundRun(self, experiment, kwargs)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        stop_process(self.server, timeout_s=10)
