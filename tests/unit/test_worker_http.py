"""The worker's HTTP endpoint keeps its log JSON when a client hangs up before the reply, as a kubelet
probe that timed out does: the process's whole output is read back line by line."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

# A worker-like process: JSON logs at debug level, the HTTP endpoint on a free port whose /readyz answers only
# after the client below has hung up. It prints the port, then serves until its stdin closes.
_SERVER = textwrap.dedent(
    """
    import json, sys, time
    from bert_eval import telemetry
    from bert_eval.temporal.metrics import serve_worker_http

    telemetry.configure_logging(fmt="json", level="DEBUG")

    def ready():
        time.sleep(0.5)
        return True

    server = serve_worker_http(host="127.0.0.1", port=0, ready=ready)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    sys.stdin.read()
    server.shutdown()
    """
)


def _hang_up(port: int, path: str) -> None:
    """Send a GET and close at once with SO_LINGER 0: the connection is reset, not closed gracefully."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())


def _ask(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.timeout(60)
def test_a_client_hanging_up_before_the_reply_leaves_only_json_lines() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        port = json.loads(process.stdout.readline())["port"]
        for _ in range(3):
            _hang_up(port, "/readyz")
        time.sleep(2.0)  # each /readyz answers 0.5 s after its client left
        # The server still answers the next client.
        assert _ask(port, "/readyz").startswith(b"HTTP/1.0 200") and _ask(port, "/healthz").endswith(b"ok\n")
        output, _ = process.communicate(b"", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"non-JSON line in the worker's output: {line!r}\nwhole output:\n" + "\n".join(lines))
    disconnects = [
        entry for entry in parsed if entry.get("event") == "worker HTTP client disconnected before the reply"
    ]
    assert len(disconnects) == 3, parsed
    assert all(entry["path"] == "/readyz" and entry["level"] == "debug" for entry in disconnects)
    assert not [entry for entry in parsed if entry.get("level") == "error"], parsed
