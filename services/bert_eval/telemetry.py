"""Logging, metrics and tracing, set up in one place. Everything else asks this module for them.

- Logs: structlog, JSON lines in containers (or when BERT_EVAL_LOG_FORMAT=json), pretty on a terminal;
  `bind_run()` puts run_id / experiment_id / workflow id / attempt on every line in its scope.
- Metrics: prometheus-client objects below, all labelled by run_id; `serve_worker_http()` exposes them
  together with the Temporal SDK's own metrics and health endpoints on one port.
- Traces: OpenTelemetry; exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import SpanProcessor
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "EVAL",
    "TRAINING",
    "WORKER",
    "bind_run",
    "check_otlp_endpoint",
    "configure_logging",
    "configure_tracing",
    "get_logger",
    "quiet_libraries",
    "run_baggage",
    "serve_worker_http",
    "tracer",
]

_RUN_CONTEXT_KEYS = ("run_id", "experiment_id", "workflow_id", "activity", "attempt")


# --------------------------------------------------------------------------- logging


def configure_logging(*, fmt: str = "auto", level: str = "INFO") -> None:
    """Route stdlib and structlog logs through one renderer (JSON or console)."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep transformers/datasets progress bars and chatter out of worker logs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for noisy in ("transformers", "datasets", "huggingface_hub", "urllib3", "filelock", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    with contextlib.suppress(ImportError):
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


@contextlib.contextmanager
def bind_run(**context: Any) -> Iterator[None]:
    """Tag every log line (and nothing else) emitted in this scope with the run's identifiers."""
    values = {k: v for k, v in context.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**values):
        yield


# --------------------------------------------------------------------------- tracing
# run_id / experiment_id travel as W3C baggage: the Temporal TracingInterceptor propagates baggage
# with the trace context through workflow, child-workflow and activity headers, and
# RunAttributesProcessor copies it onto every span (Temporal's own spans included).

_RUN_BAGGAGE = ("run_id", "experiment_id")
_TRACING_CONFIGURED = False


class RunAttributesProcessor(SpanProcessor):
    """A SpanProcessor that tags every span with the run_id / experiment_id baggage in its context."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        existing = span.attributes or {}
        for key in _RUN_BAGGAGE:
            value = baggage.get_baggage(key, parent_context)
            if value is not None and key not in existing:
                span.set_attribute(key, str(value))



@contextlib.contextmanager
def run_baggage(**values: str | None) -> Iterator[None]:
    """Spans (and Temporal calls) started in this scope carry these run identifiers. Deterministic."""
    ctx = otel_context.get_current()
    for key, value in values.items():
        if value is not None:
            ctx = baggage.set_baggage(key, value, ctx)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def check_otlp_endpoint(value: str, *, source: str = "OTEL_EXPORTER_OTLP_ENDPOINT") -> str:
    """`value` when it is an OTLP URL with an http/https scheme and a host; ValueError naming the fix otherwise.

    Without a scheme the gRPC exporter dials TLS (only `http://` means plaintext), so a plaintext
    collector such as `collector:4317` never receives a span; a missing scheme is refused instead.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{source}={value!r} is not an OTLP endpoint URL: it needs a scheme and a host, e.g. "
            "http://otel-collector.observability:4317 (https:// for TLS). Fix the variable or unset it to disable export."
        )
    return value


def configure_tracing(service_name: str, *, exporter: Any = None) -> None:
    """Install the SDK tracer provider. Spans are exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
    is set, to `exporter` when given (tests), and nowhere otherwise."""
    global _TRACING_CONFIGURED
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if _TRACING_CONFIGURED:
        current = trace.get_tracer_provider()
        if exporter is not None and isinstance(current, TracerProvider):
            current.add_span_processor(SimpleSpanProcessor(exporter))
        return

    endpoints = {name: os.environ.get(name, "") for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")}
    for name, value in endpoints.items():
        if value:
            check_otlp_endpoint(value, source=name)
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}))
    provider.add_span_processor(RunAttributesProcessor())
    if any(endpoints.values()):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _TRACING_CONFIGURED = True


def tracer() -> trace.Tracer:
    return trace.get_tracer("bert_eval")


# --------------------------------------------------------------------------- metrics


class _TrainingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("run_id", "model")
        self.step = Gauge("bert_eval_training_step", "Latest optimizer step", labels, registry=registry)
        self.total_steps = Gauge("bert_eval_training_total_steps", "Planned optimizer steps", labels, registry=registry)
        self.epoch = Gauge("bert_eval_training_epoch", "Fractional epoch", labels, registry=registry)
        self.loss = Gauge("bert_eval_training_loss", "Training loss (last logging window)", labels, registry=registry)
        self.learning_rate = Gauge("bert_eval_training_learning_rate", "Current learning rate", labels, registry=registry)
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
            "bert_eval_training_resumes", "Times a run resumed from a checkpoint on this worker", labels, registry=registry
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


class _WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge("bert_eval_worker_up", "1 while the worker process runs", ("kind", "task_queue"), registry=registry)
        self.gpu_present = Gauge("bert_eval_worker_gpu_present", "1 when a CUDA GPU is visible", ("kind",), registry=registry)
        self.gpu_memory = Gauge(
            "bert_eval_worker_gpu_memory_bytes", "GPU memory allocated by this process", ("kind",), registry=registry
        )


TRAINING = _TrainingMetrics(REGISTRY)
EVAL = _EvalMetrics(REGISTRY)
WORKER = _WorkerMetrics(REGISTRY)


def set_phase(run_id: str, phase: str) -> None:
    """Exactly one phase series is 1 per run on this worker."""
    for known in ("loading", "training", "saving", "completed", "failed", "interrupted"):
        TRAINING.phase.labels(run_id=run_id, phase=known).set(1 if known == phase else 0)


# --------------------------------------------------------------------------- worker HTTP endpoint


def serve_worker_http(
    *,
    host: str,
    port: int,
    ready: Callable[[], bool],
    sdk_metrics_url: str | None = None,
) -> ThreadingHTTPServer:
    """One port per worker: /metrics (ours + the Temporal SDK's), /healthz (alive), /readyz (polling)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
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
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # scrapes every few seconds are not news
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server
