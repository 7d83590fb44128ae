"""Loopback ports for servers and workers started by tests."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A loopback port nobody listens on now (the OS's choice, so parallel tests rarely collide). Under
    pytest-xdist each pytest process takes only ports in its own residue class, so two processes never
    pick the same port between one's choice and its server's bind."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    lane = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port % processes == lane % processes:
            return port
