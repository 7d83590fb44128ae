"""Workers started before Temporal, and several workers on one machine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.ports import free_port

from .harness import Stack

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
