"""Workers started before Temporal, and several workers on one machine."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import pytest
from support.harness import Stack
from support.ports import free_port
from support.worker_forks import ForkedProcess

from bert_eval.settings import TemporalSettings
from bert_eval.temporal.client import connect
from bert_eval.temporal.devserver import DevServerError, LocalStack, wait_until_serving
from bert_eval.temporal.submit import missing_workers

pytestmark = pytest.mark.integration


def test_worker_waits_for_temporal_then_serves(tmp_path: Path, data_dir: Path) -> None:
    stack = Stack.start(tmp_path, data_dir, with_server=False)
    try:
        worker = stack.start_worker("eval", wait=False, fork=False)  # the worker's own start-up, as a fresh process
        deadline = time.monotonic() + 120
        while worker.log_file.read_text().count("cannot reach Temporal at") < 2:
            assert worker.process.poll() is None, worker.log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, worker.log_file.read_text()[-3000:]
            time.sleep(0.2)
        stack.start_server()
        worker.wait_ready(timeout_s=120)
        log = worker.log_file.read_text()
        assert "Traceback" not in log
        retries = [line for line in log.splitlines() if "cannot reach Temporal at" in line]
        assert all(len(line) < 1000 for line in retries)  # one line per attempt, not a traceback
        print(f"\nworker waited through {len(retries)} connection attempts, then became ready")
    finally:
        stack.close()


def test_second_worker_on_a_taken_metrics_port_moves_and_says_so(stack: Stack) -> None:
    port = str(free_port())
    first = stack.start_worker("eval", BERT_EVAL_METRICS_PORT=port)
    second = stack.start_worker("eval", wait=False, BERT_EVAL_METRICS_PORT=port)
    deadline = time.monotonic() + 120
    while f"metrics port {port} is in use" not in second.log_file.read_text():
        assert second.process.poll() is None, second.log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, second.log_file.read_text()[-3000:]
        time.sleep(0.2)
    assert "BERT_EVAL_METRICS_PORT" in second.log_file.read_text()
    assert second.process.poll() is None and first.process.poll() is None


def test_forked_workers_are_processes_of_their_own(stack: Stack) -> None:
    """The suite's workers are forked from pre-imported templates (support/worker_forks.py): each has its
    own pid, log and environment, exits as a subprocess would report it, and consecutive workers come
    from templates with different hash seeds."""
    first, second = stack.start_workers("eval", "eval")
    assert isinstance(first.process, ForkedProcess) and isinstance(second.process, ForkedProcess)
    assert first.pid != second.pid and first.metrics_port != second.metrics_port
    for worker in (first, second):  # its settings come from its own environment
        [starting] = [
            json.loads(line) for line in worker.log_file.read_text().splitlines() if '"worker starting"' in line
        ]
        assert starting["runs_dir"] == str(stack.runs_dir) and starting["metrics_port"] == worker.metrics_port
    seeds = {_hash_seed(worker.pid) for worker in (first, second)}
    assert len(seeds) == 2, "both workers came from one template"
    first.kill()
    assert first.process.returncode == -9
    assert second.terminate(timeout_s=60) == 0  # graceful shutdown, as `bert-eval worker` exits on SIGTERM
    assert "worker stopped" in second.log_file.read_text()


def _hash_seed(pid: int) -> bytes:
    """The PYTHONHASHSEED of the process's initial environment block: a forked worker's is its template's."""
    [seed] = [v for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if v.startswith(b"PYTHONHASHSEED=")]
    return seed


def test_the_local_stack_returns_once_a_worker_polls_each_queue(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bert-eval up` / `demo`: server and both workers, and only then the submission (no "no worker polls")."""
    for name, value in {
        "BERT_EVAL_RUNS_DIR": str(tmp_path / "bert_runs"),
        "BERT_EVAL_DATA_DIR": str(data_dir),
        "BERT_EVAL_FORCE_CPU": "true",
    }.items():
        monkeypatch.setenv(name, value)
    ports = {"training": free_port(), "eval": free_port()}
    stack = LocalStack(port=free_port(), ui_port=None, db_file=None, log_dir=tmp_path / "logs", metrics_ports=ports)
    try:
        stack.start().wait_until_polled(timeout_s=120)
        assert all(process.poll() is None for process, _ in stack.workers.values())

        async def missing() -> list[str]:
            return await missing_workers(await connect(TemporalSettings(address=stack.address)))

        assert asyncio.run(missing()) == []
    finally:
        stack.stop()


def test_the_local_stack_names_a_worker_that_exits_before_polling(tmp_path: Path) -> None:
    stack = LocalStack(
        port=free_port(), ui_port=None, db_file=None, log_dir=tmp_path / "logs",
        metrics_ports={"training": free_port()},
        worker_command=(sys.executable, "-c", "import sys; print('cannot start: no GPU'); sys.exit(3)"),
    )  # fmt: skip
    try:
        with pytest.raises(
            DevServerError,
            match=r"the training worker exited with 3 \(log .*training-worker.log\): cannot start: no GPU",
        ):
            stack.start().wait_until_polled(timeout_s=60)
    finally:
        stack.stop()


def test_a_port_that_listens_is_not_yet_a_server_that_serves() -> None:
    """Between listening and serving, the dev server answers "Frontend is not healthy yet"; `start_dev_server`
    waits for a served health check, not for the port. A listener that serves nothing never passes."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DevServerError, match=rf"at 127\.0\.0\.1:{port} did not serve within 2s: "):
            wait_until_serving(f"127.0.0.1:{port}", timeout_s=2)
        assert time.monotonic() - started < 15  # one attempt is abandoned after 3 s, not the RPC's 30 s
