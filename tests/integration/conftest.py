"""One Temporal dev server for the session. Each test (or module) gets its own namespace on it, with its
own task queues, workflow ids and runs dir, so tests never take each other's work. Tests that stop,
kill or restart the server start their own (`Stack.start`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import harness
from support.harness import Stack, stop_process
from support.ports import free_port
from support.worker_forks import WorkerForks

from bert_eval.temporal.devserver import start_dev_server


@pytest.fixture(scope="session", autouse=True)
def worker_forks() -> Iterator[WorkerForks]:
    """Worker processes forked from templates that have imported the worker's modules, so a worker start
    skips the imports (support/worker_forks.py)."""
    with WorkerForks() as forks:
        harness.WORKER_FORKS = forks
        try:
            yield forks
        finally:
            harness.WORKER_FORKS = None


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's dev server: its address."""
    port = free_port()
    log_dir = tmp_path_factory.mktemp("shared-temporal")
    server = start_dev_server(port=port, ui_port=None, db_file=None, log_file=log_dir / "temporal.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(server, timeout_s=10)


@pytest.fixture
def stack(shared_server: str, tmp_path: Path, data_dir: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A namespace of its own on the shared server, a runs dir and a log dir; workers are started by the test."""
    stack = Stack.on_server(shared_server, tmp_path, data_dir, label=request.node.name)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def served(
    shared_server: str, tmp_path_factory: pytest.TempPathFactory, data_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """For a module's tests that leave the workers alone: one namespace, runs dir, training worker and
    eval worker, started once for the module. Its tests use distinct run and experiment ids."""
    label = request.module.__name__.rsplit(".", 1)[-1]
    stack = Stack.on_server(shared_server, tmp_path_factory.mktemp(label), data_dir, label=label)
    try:
        stack.start_workers("training", "eval")
        yield stack
    finally:
        stack.close()
