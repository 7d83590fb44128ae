"""Commands that cannot reach Temporal say where they looked and exit 2, through the one exit in `main()`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _unused_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    "args", [["status", "nonexistent"], ["wait", "nonexistent", "--timeout", "60"], ["predict", "some-run", "a text"]]
)
def test_an_unreachable_server_is_named_and_exits_2(args: list[str]) -> None:
    address = _unused_address()
    done = subprocess.run(
        [sys.executable, "-m", "bert_eval", *args],
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())  # rich wraps long lines
    assert message.startswith(f"error: cannot reach Temporal at {address} (TEMPORAL_ADDRESS): ")
    assert "Traceback" not in done.stderr and done.stdout == ""
