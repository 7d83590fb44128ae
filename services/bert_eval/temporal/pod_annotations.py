"""A worker's own pod annotations, kept in step with the activity attempts it is running.

Scale-down must never pick a busy worker. A ReplicaSet removes the pods with the lowest
`controller.kubernetes.io/pod-deletion-cost` first, so each worker sets its own pod's cost to the number
of attempts it runs (0 when idle). On the training pool the worker also marks its pod
`karpenter.sh/do-not-disrupt: "true"` and `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` while an
attempt runs, so neither node autoscaler consolidates a node away under a fine-tune; the marks are removed
when the worker goes idle.

The worker patches only its own pod (its name from the downward API, its namespace the release's; the
chart's Role grants `patch` on pods and a ValidatingAdmissionPolicy refuses patches to any other pod).
A failed patch is logged and never fails the activity: the annotations steer scale-down, they do not
gate work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from bert_eval import telemetry

__all__ = [
    "CLUSTER_AUTOSCALER_SAFE_TO_EVICT",
    "DELETION_COST",
    "KARPENTER_DO_NOT_DISRUPT",
    "AttemptsInterceptor",
    "PodAnnotationSettings",
    "PodAnnotator",
    "PodPatchApi",
    "desired_annotations",
    "kubernetes_pod_api",
]

log = telemetry.get_logger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
KARPENTER_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
CLUSTER_AUTOSCALER_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"


class PodAnnotationSettings(BaseSettings):
    """Read from BERT_EVAL_POD_* (the chart sets them; outside Kubernetes they stay unset and nothing is patched)."""

    model_config = SettingsConfigDict(env_prefix="BERT_EVAL_POD_", extra="ignore")

    # The pod's own name (downward API: metadata.name) and namespace.
    name: str = ""
    namespace: str = ""
    # Keep controller.kubernetes.io/pod-deletion-cost equal to the attempts running.
    deletion_cost: bool = False
    # Also set the node autoscalers' do-not-disrupt annotations while an attempt runs (training pool).
    do_not_disrupt: bool = False

    @property
    def enabled(self) -> bool:
        """True when the pod is known (name and namespace) and at least one annotation is asked for."""
        return bool(self.name and self.namespace and (self.deletion_cost or self.do_not_disrupt))


class PodPatchApi(Protocol):
    """The one call of `kubernetes.client.CoreV1Api` this module makes."""

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        """Merge-patch pod `name` with `body` (here: its annotations)."""


def kubernetes_pod_api() -> PodPatchApi:
    """CoreV1Api from the pod's service account token."""
    from kubernetes import client, config

    config.load_incluster_config()
    api: PodPatchApi = client.CoreV1Api()  # type: ignore[assignment]  # generated signatures spell out every keyword
    return api


def desired_annotations(running: int, *, deletion_cost: bool, do_not_disrupt: bool) -> dict[str, str | None]:
    """The annotations a pod running `running` attempts should carry; None removes one (merge patch).

    Raises ValueError for a negative count.
    """
    if running < 0:
        raise ValueError(f"attempts running must be >= 0, got {running}")
    wanted: dict[str, str | None] = {}
    if deletion_cost:
        wanted[DELETION_COST] = str(running)
    if do_not_disrupt:
        wanted[KARPENTER_DO_NOT_DISRUPT] = "true" if running else None
        wanted[CLUSTER_AUTOSCALER_SAFE_TO_EVICT] = "false" if running else None
    return wanted


class PodAnnotator:
    """Counts the attempts this worker runs and patches its pod whenever the wanted annotations change.

    With `api` None (outside Kubernetes) it only counts and reports the count to `on_count`.

    Patches run one at a time off the event loop, always with the latest count, so a burst of starts and
    finishes ends in the annotations of the final count.
    """

    def __init__(
        self,
        api: PodPatchApi | None,
        *,
        pod: str,
        namespace: str,
        deletion_cost: bool = True,
        do_not_disrupt: bool = False,
        on_count: Callable[[int], None] | None = None,
    ) -> None:
        self._api = api
        self._pod = pod
        self._namespace = namespace
        self._deletion_cost = deletion_cost
        self._do_not_disrupt = do_not_disrupt
        self._on_count = on_count
        self._running = 0
        self._applied: dict[str, str | None] | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> int:
        """How many activity attempts this worker is running now."""
        return self._running

    async def attempt_started(self) -> None:
        """Count one more running attempt and bring the pod's annotations up to date."""
        self._running += 1
        await self._sync()

    async def attempt_finished(self) -> None:
        """Count one attempt fewer (whatever its outcome) and bring the pod's annotations up to date."""
        self._running = max(0, self._running - 1)
        await self._sync()

    async def reset(self) -> None:
        """Mark the pod idle, as at start: a restarted container must not inherit a busy mark."""
        self._applied = None
        await self._sync()

    async def _sync(self) -> None:
        if self._on_count is not None:
            self._on_count(self._running)
        async with self._lock:
            wanted = desired_annotations(
                self._running, deletion_cost=self._deletion_cost, do_not_disrupt=self._do_not_disrupt
            )
            if self._api is None or wanted == self._applied:
                return
            try:
                await asyncio.to_thread(self._patch, wanted)
            except Exception as exc:  # API unreachable, RBAC: scale-down loses a hint, the attempt goes on
                log.warning(
                    "cannot update this pod's annotations; scale-down may pick it while it is busy",
                    pod=self._pod,
                    namespace=self._namespace,
                    annotations=wanted,
                    error=repr(exc),
                )
                return
            self._applied = wanted
            log.info("pod annotations updated", pod=self._pod, attempts_running=self._running, annotations=wanted)

    def _patch(self, annotations: dict[str, str | None]) -> None:
        assert self._api is not None
        # A JSON merge patch: null removes an annotation, and only these keys change.
        self._api.patch_namespaced_pod(
            self._pod,
            self._namespace,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
        )


class AttemptsInterceptor(Interceptor):
    """A worker interceptor that reports every activity attempt's start and end to a PodAnnotator."""

    def __init__(self, annotator: PodAnnotator) -> None:
        self._annotator = annotator

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap the worker's activity calls so each start and end updates the pod's annotations."""
        return _AttemptsInbound(next, self._annotator)


class _AttemptsInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, annotator: PodAnnotator) -> None:
        super().__init__(next)
        self._annotator = annotator

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        await self._annotator.attempt_started()
        try:
            return await super().execute_activity(input)
        finally:
            await self._annotator.attempt_finished()


def worker_annotator(kind: str, task_queue: str, settings: PodAnnotationSettings | None = None) -> PodAnnotator:
    """The annotator of a worker process: counts its attempts into `bert_eval_worker_attempts_running` and,
    when BERT_EVAL_POD_* name the pod and turn a mark on, patches that pod through the service account."""
    from bert_eval.temporal import metrics

    settings = settings or PodAnnotationSettings()
    gauge = metrics.WORKER.attempts_running.labels(kind=kind, task_queue=task_queue)
    gauge.set(0)
    api: PodPatchApi | None = None
    if settings.enabled:
        try:
            api = kubernetes_pod_api()
        except Exception as exc:  # no token mounted, not in a cluster: count only
            log.warning(
                "pod annotations are on but the Kubernetes API is not reachable from this pod; scale-down cannot "
                "tell busy workers from idle ones (the chart mounts the service account token when "
                "busyPodProtection is on)",
                pod=settings.name,
                error=repr(exc),
            )
    return PodAnnotator(
        api,
        pod=settings.name,
        namespace=settings.namespace,
        deletion_cost=settings.deletion_cost,
        do_not_disrupt=settings.do_not_disrupt,
        on_count=gauge.set,
    )
