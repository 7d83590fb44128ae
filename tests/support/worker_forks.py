"""Worker processes for the integration tests, forked from a template that has already imported them.

A worker's start-up is almost all imports (torch, transformers, datasets, scipy, optuna), and the suite
starts many workers, most of them replacements for workers a test killed (docs/performance.md, "Test
suite"). A template process imports the worker's modules once; each worker is a `fork()` of it that then runs
`bert-eval worker ...` (or the paced test worker) as `python -m` would, with its own environment,
argv and log file. It is a real, separate process: SIGKILL, SIGTERM, exit codes and the worker's own
start-up (settings, Temporal connection, metrics port, task queues) are unchanged. Tests of the
start-up itself start workers with `subprocess` (`Stack.start_worker(..., fork=False)`).

Two templates run, each with its own hash seed, and workers alternate between them, so a run that a
killed worker started is resumed by a process with another hash seed, as on separate machines.

Run as a script, it is the template: one JSON request per line on stdin
(`{"argv": [...], "env": {...}, "log": PATH}`), one JSON line per event on stdout (`{"started": PID}`,
`{"error": MESSAGE}`, `{"exited": PID, "returncode": N}` with -N for a signal, as `subprocess` reports).
It has no threads, so forking it is safe.
"""

from __future__ import annotations

import fcntl
import json
import os
import runpy
import secrets
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PRELOAD = (
    "bert_eval.cli",
    "bert_eval.temporal.worker",
    "bert_eval.core.training.callbacks",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert",
)


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _above_stdio(fd: int) -> int:
    """`fd`, moved above 2 if it is one of them: the template may have been started with some of 0-2
    closed (pytest-xdist does), and open() returns the lowest free descriptor."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 3)
    os.close(fd)
    return moved


def _become_worker(argv: list[str], env: dict[str, str], log: str) -> None:
    """In the forked child: take the worker's descriptors, environment and argv and run it as `python`
    would. Its exit (return, `SystemExit`, an uncaught exception) unwinds out of `serve()`, so the
    interpreter ends as the worker's own would: threads joined, atexit handlers run, streams flushed."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    out = _above_stdio(os.open(log, os.O_WRONLY | os.O_APPEND))  # the caller created it
    null = _above_stdio(os.open(os.devnull, os.O_RDONLY))
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(env)
    from bert_eval.settings import get_settings, get_temporal_settings

    get_settings.cache_clear()
    get_temporal_settings.cache_clear()
    if argv[0].endswith(".py"):
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")
    else:  # ["-m", MODULE, ...]
        sys.argv = ["bert-eval", *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


def serve() -> None:
    """The template's loop: fork on each request, report each child's exit; single-threaded."""
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    print(json.dumps({"ready": os.getpid()}), file=reply)
    stdin = sys.stdin.buffer
    pending = b""
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.1)
        if readable:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                try:
                    pid = os.fork()
                except OSError as exc:
                    print(json.dumps({"error": str(exc)}), file=reply)
                    continue
                if pid == 0:
                    reply.close()
                    _become_worker(request["argv"], request["env"], request["log"])
                    sys.exit(0)
                print(json.dumps({"started": pid}), file=reply)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            print(json.dumps({"exited": pid, "returncode": _returncode(status)}), file=reply)


class Template:
    """One template process and the workers it forked."""

    def __init__(self, hash_seed: int) -> None:
        env = dict(os.environ, PYTHONHASHSEED=str(hash_seed), PYTHONUNBUFFERED="1")
        self._process = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=os.getcwd()
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._started: list[int | str] = []
        self.returncodes: dict[int, int] = {}
        assert self._process.stdout is not None
        first = json.loads(
            self._process.stdout.readline() or b'{"error": "the worker template exited while importing"}'
        )
        if "ready" not in first:
            raise RuntimeError(first["error"])
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            event = json.loads(line)
            with self._changed:
                if "exited" in event:
                    self.returncodes[event["exited"]] = event["returncode"]
                else:
                    self._started.append(event.get("started", event.get("error", "")))
                self._changed.notify_all()

    def fork(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        log.write_bytes(b"")  # exists when this returns, as with subprocess
        with self._lock:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log)}).encode() + b"\n")
            self._process.stdin.flush()
            with self._changed:
                if not self._changed.wait_for(lambda: self._started, timeout=30):
                    raise RuntimeError("the worker template did not answer")
                started = self._started.pop(0)
        if isinstance(started, str):
            raise RuntimeError(f"fork failed: {started}")
        return started

    def wait(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self.returncodes, timeout=timeout)
            return self.returncodes.get(pid)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)


class ForkedProcess:
    """The parts of `subprocess.Popen` the tests use, for a worker forked by a template."""

    def __init__(self, template: Template, argv: list[str], env: dict[str, str], log: Path) -> None:
        self._template = template
        self.args = [sys.executable, *argv]
        self.pid = template.fork(argv, env, log)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._template.returncodes.get(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is None:
            self.returncode = self._template.wait(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not yet reaped, so the pid is still this process's
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class WorkerForks:
    """Templates with distinct hash seeds, used in turn."""

    def __init__(self, templates: int = 2) -> None:
        seeds: set[int] = set()
        while len(seeds) < templates:
            seeds.add(1 + secrets.randbelow(2**32 - 2))
        self._templates = [Template(seed) for seed in sorted(seeds)]
        self._next = 0

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> ForkedProcess:
        template = self._templates[self._next % len(self._templates)]
        self._next += 1
        return ForkedProcess(template, argv, env, log)

    def close(self) -> None:
        for template in self._templates:
            template.close()

    def __enter__(self) -> WorkerForks:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


if __name__ == "__main__":
    serve()
