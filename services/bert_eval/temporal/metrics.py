"""The workers' Prometheus metrics, all labelled by run_id, and the one HTTP port that serves them.

Only the Temporal layer imports this module (the import contract in tests/unit/test_layers.py keeps the
core free of it): importing it registers the metrics in prometheus_client's default registry.
`serve_worker_http()` exposes them together with the Temporal SDK's own metrics and the health endpoints.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bert_eval import telemetry
from bert_eval.core.records import EvalResult
from bert_eval.core.training.observer import CheckpointEvent, LogWindow, ResumeEvent, TrainingObserver

__all__ = [
    "EVAL",
    "SEARCH",
    "TRAINING",
    "WORKER",
    "PrometheusTrainingObserver",
    "record_eval_metrics",
    "serve_worker_http",
    "set_phase",
]

log = telemetry.get_logger(__name__)


class _TrainingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("run_id", "model")
        self.step = Gauge("bert_eval_training_step", "Latest optimizer step", labels, registry=registry)
        self.total_steps = Gauge("bert_eval_training_total_steps", "Planned optimizer steps", labels, registry=registry)
        self.epoch = Gauge("bert_eval_training_epoch", "Fractional epoch", labels, registry=registry)
        self.loss = Gauge("bert_eval_training_loss", "Training loss (last logging window)", labels, registry=registry)
        self.learning_rate = Gauge(
            "bert_eval_training_learning_rate", "Current learning rate", labels, registry=registry
        )
        self.samples_per_second = Gauge(
            "bert_eval_training_samples_per_second", "Training throughput in examples/s", labels, registry=registry
        )
        self.tokens_per_second = Gauge(
            "bert_eval_training_tokens_per_second",
            "Training throughput in real (non-padding) tokens/s",
            labels,
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "bert_eval_checkpoint_save_seconds",
            "Time to write and publish one checkpoint",
            labels,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.checkpoint_bytes = Gauge(
            "bert_eval_checkpoint_size_bytes", "Size of the newest checkpoint", labels, registry=registry
        )
        self.checkpoints = Counter(
            "bert_eval_checkpoints_written", "Checkpoints written by this worker", labels, registry=registry
        )
        self.resumes = Counter(
            "bert_eval_training_resumes",
            "Times a run resumed from a checkpoint on this worker",
            labels,
            registry=registry,
        )
        self.recovery_seconds = Gauge(
            "bert_eval_resume_recovery_seconds",
            "Seconds from the previous attempt's last heartbeat to the first new step, for the latest resume",
            labels,
            registry=registry,
        )
        self.steps_lost = Gauge(
            "bert_eval_resume_steps_lost",
            "Steps the previous attempt had done beyond the checkpoint it resumed from, for the latest resume",
            labels,
            registry=registry,
        )
        self.phase = Gauge(
            "bert_eval_run_phase",
            "1 for the phase a run is in on this worker (loading, training, saving, completed, failed, interrupted)",
            ("run_id", "phase"),
            registry=registry,
        )


class _EvalMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("run_id", "split")
        self.examples_per_second = Gauge(
            "bert_eval_eval_examples_per_second", "Evaluation throughput", labels, registry=registry
        )
        self.examples = Gauge("bert_eval_eval_examples", "Examples evaluated", labels, registry=registry)
        self.metric = Gauge(
            "bert_eval_eval_metric", "Evaluation metric value", ("run_id", "split", "metric"), registry=registry
        )
        self.duration = Histogram(
            "bert_eval_eval_duration_seconds",
            "Evaluation wall time",
            labels,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=registry,
        )


class _SearchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.trials = Gauge(
            "bert_eval_search_trials",
            "A search's trials by state (running, paused, stopped, completed, failed)",
            ("experiment_id", "state"),
            registry=registry,
        )
        self.best = Gauge(
            "bert_eval_search_best_objective",
            "A search's best objective so far at the highest rung any trial reached (on the held-out search slice)",
            ("experiment_id", "metric"),
            registry=registry,
        )
        self.rung_objective = Gauge(
            "bert_eval_search_rung_objective",
            "A trial's objective at a rung (on the held-out search slice)",
            ("experiment_id", "run_id", "rung_step", "metric"),
            registry=registry,
        )


class _WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "bert_eval_worker_up", "1 while the worker process runs", ("kind", "task_queue"), registry=registry
        )
        self.gpu_present = Gauge(
            "bert_eval_worker_gpu_present", "1 when a CUDA GPU is visible", ("kind",), registry=registry
        )
        self.attempts_running = Gauge(
            "bert_eval_worker_attempts_running",
            "Activity attempts this worker is running",
            ("kind", "task_queue"),
            registry=registry,
        )
        self.gpu_memory = Gauge(
            "bert_eval_worker_gpu_memory_bytes", "GPU memory allocated by this process", ("kind",), registry=registry
        )


TRAINING = _TrainingMetrics(REGISTRY)
EVAL = _EvalMetrics(REGISTRY)
SEARCH = _SearchMetrics(REGISTRY)
WORKER = _WorkerMetrics(REGISTRY)


def set_phase(run_id: str, phase: str) -> None:
    """Exactly one phase series is 1 per run on this worker."""
    for known in ("loading", "training", "saving", "completed", "paused", "failed", "interrupted"):
        TRAINING.phase.labels(run_id=run_id, phase=known).set(1 if known == phase else 0)


class PrometheusTrainingObserver(TrainingObserver):
    """The fine-tune core's observer events as this worker's Prometheus metrics."""

    def __init__(self, run_id: str, model: str) -> None:
        self._run_id = run_id
        self._labels = {"run_id": run_id, "model": model}

    def phase(self, phase: str) -> None:
        """The run's current phase (loading, training, saving, paused, interrupted) as the phase gauge."""
        set_phase(self._run_id, phase)

    def started(self, total_steps: int, step: int) -> None:
        """Training started (or resumed at `step`): the total steps gauge."""
        TRAINING.total_steps.labels(**self._labels).set(total_steps)

    def step(self, step: int, epoch: float) -> None:
        """A step ended: the step and epoch gauges."""
        TRAINING.step.labels(**self._labels).set(step)
        TRAINING.epoch.labels(**self._labels).set(epoch)

    def logged(self, window: LogWindow) -> None:
        """A logging window closed: loss, learning rate and throughput gauges."""
        metrics = TRAINING
        metrics.loss.labels(**self._labels).set(window.loss)
        metrics.learning_rate.labels(**self._labels).set(window.learning_rate)
        metrics.samples_per_second.labels(**self._labels).set(window.samples_per_s)
        metrics.tokens_per_second.labels(**self._labels).set(window.tokens_per_s)

    def checkpoint_saved(self, event: CheckpointEvent) -> None:
        """A checkpoint was published: its seconds (histogram), bytes and the checkpoint count."""
        metrics = TRAINING
        metrics.checkpoint_seconds.labels(**self._labels).observe(event.seconds)
        metrics.checkpoint_bytes.labels(**self._labels).set(event.bytes)
        metrics.checkpoints.labels(**self._labels).inc()

    def resumed(self, event: ResumeEvent) -> None:
        """The run resumed from a checkpoint: the resume count, recovery seconds and steps lost."""
        metrics = TRAINING
        metrics.resumes.labels(**self._labels).inc()
        if event.recovery_seconds is not None:
            metrics.recovery_seconds.labels(**self._labels).set(event.recovery_seconds)
        if event.steps_lost is not None:
            metrics.steps_lost.labels(**self._labels).set(event.steps_lost)


def record_eval_metrics(result: EvalResult) -> None:
    """An evaluation's examples, throughput and duration, labelled by run and split."""
    labels = {"run_id": result.run_id, "split": result.split}
    EVAL.examples.labels(**labels).set(result.examples)
    EVAL.examples_per_second.labels(**labels).set(result.examples / max(result.duration_s, 1e-9))
    EVAL.duration.labels(**labels).observe(result.duration_s)
    for name, value in result.metrics.items():
        EVAL.metric.labels(metric=name, **labels).set(value)


# --------------------------------------------------------------------------- worker HTTP endpoint


# A client that closes its connection before the reply (a probe that timed out, a scraper stopped mid-request).
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _WorkerHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server whose request errors go to the worker's log as one structured line each,
    never as a traceback printed to stderr (socketserver's default)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        address = client_address if isinstance(client_address, tuple) else (client_address,)
        client = ":".join(str(part) for part in address)
        if isinstance(error, _DISCONNECTS):
            log.debug("worker HTTP client disconnected before the reply", client=client, error=error.__class__.__name__)
        else:
            log.error("worker HTTP request failed", client=client, exc_info=True)


def serve_worker_http(
    *,
    host: str,
    port: int,
    ready: Callable[[], bool],
    sdk_metrics_url: str | None = None,
) -> ThreadingHTTPServer:
    """Serve one port per worker in a daemon thread: /metrics (ours and the Temporal SDK's), /healthz (alive),
    /readyz (polling).

    Args:
        host: the interface to listen on.
        port: the port; 0 picks a free one (read it from the returned server's `server_address`).
        ready: called on each /readyz request; True answers 200, False 503.
        sdk_metrics_url: the Temporal SDK's own Prometheus endpoint, appended to /metrics when it answers.

    Returns:
        The running server; `shutdown()` stops it. A client that disconnects before its reply is logged at
        debug level as one line; other request errors as one error line with the exception.

    Raises:
        OSError: the address cannot be bound (EADDRINUSE when the port is taken).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body = generate_latest(REGISTRY)
                if sdk_metrics_url:
                    with contextlib.suppress(OSError):
                        with urllib.request.urlopen(sdk_metrics_url, timeout=2) as response:
                            body += b"\n" + response.read()
                self._reply(200, body, CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                self._reply(200, b"ok\n", "text/plain")
            elif self.path.startswith("/readyz"):
                ok = ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except _DISCONNECTS as exc:
                self.close_connection = True
                log.debug(
                    "worker HTTP client disconnected before the reply",
                    path=self.path.split("?", 1)[0],
                    status=status,
                    error=exc.__class__.__name__,
                )

        def log_message(self, *args: Any) -> None:  # scrapes every few seconds are not news
            return

    server = _WorkerHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server
