from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bert_eval.temporal.devserver import start_dev_server

from .harness import Stack, free_port, stop_process


@pytest.fixture
def stack(tmp_path: Path, data_dir: Path) -> Iterator[Stack]:
    """A fresh dev server (own state), runs dir and log dir per test; workers are started by the test."""
    stack = Stack.start(tmp_path, data_dir)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One dev server for the tests that bring their own in-process workers (a uuid task queue each)."""
    port = free_port()
    log_dir = tmp_path_factory.mktemp("shared-temporal")
    server = start_dev_server(port=port, ui_port=None, db_file=None, log_file=log_dir / "temporal.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(server, timeout_s=10)
