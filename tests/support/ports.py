"""Loopback ports for servers and workers started by tests."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A loopback port nobody listens on now (the OS's choice, so parallel tests rarely collide). Under
    pytest-xdist each pytest process keeps only ports of its own class (port // 2 modulo the number of
    processes: Linux hands bind() ports of one parity), so two processes never pick the same port between
    one's choice and its server's bind."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    lane = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % processes
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port // 2 % processes == lane:
            return port
    raise RuntimeError(f"no free loopback port of class {lane} (of {processes}) in 1000 tries")
