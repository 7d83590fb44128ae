"""Logging and tracing, set up in one place. Everything else asks this module for a logger or a tracer.

- Logs: structlog, JSON lines in containers (or when BERT_EVAL_LOG_FORMAT=json), pretty on a terminal;
  `bind_run()` puts run_id / experiment_id / workflow id / attempt on every line in its scope.
- Traces: OpenTelemetry; exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Metrics are the workers' concern and live in `bert_eval.temporal.metrics`: importing the core registers none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import structlog
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import SpanProcessor

__all__ = [
    "bind_run",
    "check_otlp_endpoint",
    "configure_logging",
    "configure_tracing",
    "get_logger",
    "quiet_libraries",
    "run_baggage",
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
    """A structlog logger named `name` (a module's `__name__`), writing through the one logging setup."""
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
        """Copy the context's run_id / experiment_id baggage onto `span`, unless it already has them."""
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
            "http://otel-collector.observability:4317 (https:// for TLS). Fix the variable or unset it to disable "
            "export."
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

    endpoints = {
        name: os.environ.get(name, "") for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    }
    for name, value in endpoints.items():
        if value:
            check_otlp_endpoint(value, source=name)
    service = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(RunAttributesProcessor())
    if any(endpoints.values()):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _TRACING_CONFIGURED = True


def tracer() -> trace.Tracer:
    """bert-eval's OpenTelemetry tracer (a no-op until `configure_tracing` installs a provider)."""
    return trace.get_tracer("bert_eval")
