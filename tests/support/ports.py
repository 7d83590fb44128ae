"""Loopback ports for servers and workers started by tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nobody listens on now (the OS's choice, so parallel tests rarely collide)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
