"""Worker entry points: `bert-eval worker training|eval`. Side effects live here, not in the modules they run."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import socket
import threading
from collections.abc import Sequence
from datetime import timedelta
from enum import Enum

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Interceptor, Worker

from bert_eval import telemetry
from bert_eval.settings import Settings, TemporalSettings, get_settings, get_temporal_settings, task_queues
from bert_eval.temporal import metrics, pod_annotations
from bert_eval.temporal.activities import EvalActivities, TrainingActivities
from bert_eval.temporal.client import MissingSearchAttributesError, connect, ensure_search_attributes
from bert_eval.temporal.names import TIMEOUTS
from bert_eval.temporal.tracking_activities import TrackingActivities
from bert_eval.temporal.workflows import (
    BertEvalWorkflow,
    CheckpointedBertTrainingWorkflow,
    CoordinatorWorkflow,
    LegacyEvalWorkflow,
    LegacyTrainingWorkflow,
    PredictWorkflow,
)

__all__ = ["WorkerKind", "build_worker", "graceful_shutdown_timeout", "run_worker"]

log = telemetry.get_logger(__name__)

_MAX_HEARTBEAT_THROTTLE = TIMEOUTS.heartbeat_throttle
# On SIGTERM a worker gets this long to checkpoint and hand the run back, unless
# BERT_EVAL_GRACEFUL_SHUTDOWN_S (the chart: terminationGracePeriodSeconds minus a margin) says otherwise.
_DEFAULT_GRACEFUL_SHUTDOWN = {"training": timedelta(seconds=90), "eval": timedelta(seconds=30)}
# A worker that starts before Temporal (usual in a cluster) retries the connection, backing off to this.
_CONNECT_RETRY_MAX_S = 10.0


class WorkerKind(str, Enum):
    """A worker pool: `training` (fine-tuning, GPU-capable) or `eval` (the coordinator, snapshots, evaluation
    and prediction)."""

    training = "training"
    eval = "eval"


def build_worker(client, kind: WorkerKind, settings: Settings, *, interceptors: Sequence[Interceptor] = ()) -> Worker:
    """The worker for one pool, wired with its workflows and activities (no I/O happens here)."""
    graceful = graceful_shutdown_timeout(kind, settings)
    training_queue, eval_queue = task_queues(settings)
    if kind is WorkerKind.training:
        activities = TrainingActivities(runs_dir=settings.runs_dir, force_cpu=settings.force_cpu)
        return Worker(
            client,
            task_queue=training_queue,
            workflows=[CheckpointedBertTrainingWorkflow, LegacyTrainingWorkflow],
            activities=[activities.fine_tune],
            max_concurrent_activities=settings.training_concurrency,
            max_heartbeat_throttle_interval=_MAX_HEARTBEAT_THROTTLE,
            default_heartbeat_throttle_interval=_MAX_HEARTBEAT_THROTTLE,
            graceful_shutdown_timeout=graceful,
            interceptors=interceptors,
        )
    eval_activities = EvalActivities(
        runs_dir=settings.runs_dir,
        data_dir=settings.data_dir,
        models_dir=settings.models_dir,
        force_cpu=settings.force_cpu,
    )
    return Worker(
        client,
        task_queue=eval_queue,
        workflows=[CoordinatorWorkflow, BertEvalWorkflow, LegacyEvalWorkflow, PredictWorkflow],
        activities=[
            *eval_activities.all(),
            *TrackingActivities(runs_dir=settings.runs_dir, default_uri=settings.mlflow_tracking_uri).all(),
        ],
        max_concurrent_activities=settings.eval_concurrency,
        max_heartbeat_throttle_interval=_MAX_HEARTBEAT_THROTTLE,
        default_heartbeat_throttle_interval=_MAX_HEARTBEAT_THROTTLE,
        graceful_shutdown_timeout=graceful,
        interceptors=interceptors,
    )


def graceful_shutdown_timeout(kind: WorkerKind, settings: Settings) -> timedelta:
    """How long this worker waits for its activities after SIGTERM."""
    if settings.graceful_shutdown_s is not None:
        return timedelta(seconds=settings.graceful_shutdown_s)
    return _DEFAULT_GRACEFUL_SHUTDOWN[kind.value]


def _free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_worker(kind: WorkerKind, settings: Settings | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT, then shut down gracefully."""
    settings = settings or get_settings()
    if kind is WorkerKind.training and settings.require_gpu:
        _exit_unless_gpu()
    telemetry.configure_logging(fmt=settings.log_format, level=settings.log_level)
    telemetry.configure_tracing(service_name=f"bert-eval-{kind.value}-worker")
    queue = task_queues(settings)[0 if kind is WorkerKind.training else 1]

    runtime = None
    sdk_metrics_url = None
    if settings.metrics_port:
        # The SDK's own Prometheus exporter listens on loopback; our endpoint re-serves it, so a pod
        # has one scrape target for both.
        sdk_port = _free_local_port()
        runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{sdk_port}")))
        sdk_metrics_url = f"http://127.0.0.1:{sdk_port}/metrics"

    ready = threading.Event()
    http = None
    if settings.metrics_port:
        http = _serve_http(settings, ready=ready.is_set, sdk_metrics_url=sdk_metrics_url)
    metrics.WORKER.up.labels(kind=kind.value, task_queue=queue).set(1)
    _watch_gpu(kind.value)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    client = await _connect_with_retry(get_temporal_settings(), runtime=runtime, stop=stop)
    if client is None:
        if http is not None:
            http.shutdown()
        log.info("worker stopped before Temporal was reachable", kind=kind.value)
        return
    try:
        await ensure_search_attributes(client)
    except MissingSearchAttributesError as exc:
        raise SystemExit(f"bert-eval {kind.value} worker: {exc}") from None
    # Keeps the pod's deletion cost (and, on the training pool, do-not-disrupt) in step with its attempts.
    annotator = pod_annotations.worker_annotator(kind.value, queue)
    await annotator.reset()
    worker = build_worker(client, kind, settings, interceptors=[pod_annotations.AttemptsInterceptor(annotator)])
    _freeze_startup_heap()

    metrics_port = http.server_address[1] if http is not None else None
    log.info(
        "worker starting",
        kind=kind.value,
        task_queue=queue,
        runs_dir=str(settings.runs_dir),
        metrics_port=metrics_port,
        graceful_shutdown_s=graceful_shutdown_timeout(kind, settings).total_seconds(),
    )
    run_task = asyncio.create_task(worker.run())
    ready.set()
    stop_task = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    ready.clear()
    if stop_task in done:
        log.info("signal received; shutting down gracefully", kind=kind.value)
        await worker.shutdown()
    await run_task
    metrics.WORKER.up.labels(kind=kind.value, task_queue=queue).set(0)
    if http is not None:
        http.shutdown()
    log.info("worker stopped", kind=kind.value)


def _freeze_startup_heap() -> None:
    """Exempt what start-up built (modules, the SDK, the worker; kept for the process's life) from the
    garbage collector's full scans, which the Trainer runs as it sets up each run (docs/performance.md).
    Objects created later are collected as usual; reference counting frees frozen ones."""
    gc.collect()
    gc.freeze()


def _exit_unless_gpu() -> None:
    """Exit at once, with one line saying why, when a GPU was asked for and torch sees none."""
    import torch

    if torch.cuda.is_available():
        return
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    # The driver's libcuda.so.1 comes from the node: the loader's cache, or LD_LIBRARY_PATH (GKE mounts
    # it at /usr/local/nvidia/lib64 and sets nothing; the training image puts that path there).
    searched = os.environ.get("LD_LIBRARY_PATH") or "(unset)"
    raise SystemExit(
        f"bert-eval training worker: BERT_EVAL_REQUIRE_GPU is set but torch {torch.__version__} ({build}) "
        f"sees no CUDA device (driver library libcuda.so.1 searched in LD_LIBRARY_PATH={searched} and the "
        "ldconfig cache); run the pod on a GPU node (NVIDIA device plugin, driver >= 580 for the "
        "CUDA 13.0 image) or unset BERT_EVAL_REQUIRE_GPU (chart: gpu.enabled=false) to train on CPU"
    )


def _serve_http(settings: Settings, *, ready, sdk_metrics_url: str | None):
    """The worker's /metrics, /healthz, /readyz. When the configured port is taken (several workers on
    one machine), a free port is used instead and logged."""
    try:
        return metrics.serve_worker_http(
            host=settings.metrics_host, port=settings.metrics_port, ready=ready, sdk_metrics_url=sdk_metrics_url
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    http = metrics.serve_worker_http(host=settings.metrics_host, port=0, ready=ready, sdk_metrics_url=sdk_metrics_url)
    log.warning(
        f"metrics port {settings.metrics_port} is in use; serving /metrics, /healthz, /readyz on port "
        f"{http.server_address[1]} instead (set BERT_EVAL_METRICS_PORT to choose one)",
        requested_port=settings.metrics_port,
        metrics_port=http.server_address[1],
    )
    return http


async def _connect_with_retry(temporal: TemporalSettings, *, runtime: Runtime | None, stop: asyncio.Event):
    """Connect, retrying with backoff (one log line per attempt) until Temporal answers or `stop` is set."""
    delay, attempt = 1.0, 1
    while True:
        try:
            return await connect(temporal, runtime=runtime)
        except RuntimeError as exc:  # the SDK's connection error
            reason = str(exc).splitlines()[0][:200]
            log.warning(
                f"cannot reach Temporal at {temporal.address} (attempt {attempt}): {reason}; retrying in {delay:.0f}s",
                address=temporal.address,
                attempt=attempt,
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return None
        except asyncio.TimeoutError:
            pass
        delay, attempt = min(delay * 2, _CONNECT_RETRY_MAX_S), attempt + 1


def _watch_gpu(kind: str) -> None:
    import torch

    present = torch.cuda.is_available()
    metrics.WORKER.gpu_present.labels(kind=kind).set(1 if present else 0)
    metrics.WORKER.gpu_memory.labels(kind=kind).set(0)
    if not present:
        return

    def sample() -> None:
        import time

        while True:
            metrics.WORKER.gpu_memory.labels(kind=kind).set(torch.cuda.memory_allocated())
            time.sleep(5)

    threading.Thread(target=sample, name="gpu-metrics", daemon=True).start()
