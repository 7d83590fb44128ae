"""A real MLflow tracking server for tests: `mlflow server` with a sqlite backend and a local artifact
root on a free loopback port, started like the Temporal dev server and stopped with its process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.ports import free_port


@dataclass
class MlflowServer:
    uri: str
    process: subprocess.Popen
    log_file: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_mlflow_server(root: Path, *, port: int | None = None, timeout_s: float = 120.0) -> MlflowServer:
    """`mlflow server` on 127.0.0.1:`port` (default: a free one), its store `root/mlflow.db` and artifacts under
    `root/artifacts`; returns once `/health` answers (RuntimeError with the server's log otherwise)."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_file = root / "mlflow-server.log"
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    process = subprocess.Popen(
        argv, stdout=open(log_file, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", process=process, log_file=log_file)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log_file.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"mlflow server did not answer within {timeout_s:.0f}s:\n{log_file.read_text()[-3000:]}")
