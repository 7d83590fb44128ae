"""`bert-eval chaos kill` and `chaos preempt`: stop a training worker mid-activity to show that training resumes.

`kill` gives no notice. Targets are local processes (`--target local`: SIGKILL), pods (`--target k8s`:
delete with grace period 0) or pods started by `podman kube play` (`--target podman`: SIGKILL to every
container of the pod; bringing the pod back is the caller's job, as a controller's would be).

`preempt --grace N` gives the notice a node drain or a spot reclaim gives: SIGTERM, then SIGKILL once N
seconds have passed (local: signals to the process; k8s: delete with grace period N; podman:
`podman pod stop -t N`). The worker uses the notice to write a final checkpoint. When Temporal can be
reached, the victim is a worker that holds a running training activity: each running training
workflow's (`CheckpointedBertTrainingWorkflow`) pending activities name their worker as `pid@hostname`
(the SDK's default identity; in a pod the hostname is the pod name). When Temporal cannot tell,
any training worker is chosen.

The selection rules are small pure functions over plain data (`choose_local_target`,
`choose_pod_target`, `busy_identities`) so tests can call them without a worker or a cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer

from bert_eval import telemetry
from bert_eval.temporal.names import WORKFLOW

__all__ = [
    "BUSY_TRAINING_QUERY",
    "Kill",
    "LocalWorker",
    "PodCandidate",
    "Target",
    "WorkerIdentity",
    "busy_identities",
    "chaos_app",
    "choose_local_target",
    "choose_pod_target",
    "default_namespace",
    "find_local_training_workers",
    "is_training_worker_argv",
    "kill_training_workers",
    "parse_worker_identity",
    "preempt_process",
    "release_selector",
]

log = telemetry.get_logger(__name__)

# Training workflows under their current type and the one they had before (started before an upgrade).
BUSY_TRAINING_QUERY = (
    f"(WorkflowType='{WORKFLOW.training}' OR WorkflowType='{WORKFLOW.legacy_training}') AND ExecutionStatus='Running'"
)
DEFAULT_SELECTOR = "app.kubernetes.io/component=training-worker"


def release_selector(selector: str, release: str | None) -> str:
    """The selector narrowed to one Helm release's pods (its app.kubernetes.io/instance label)."""
    return f"{selector},app.kubernetes.io/instance={release}" if release else selector


IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Connecting, listing and describing together; past this the kill goes ahead without Temporal's view.
TEMPORAL_LOOKUP_TIMEOUT_S = 15.0


class Target(str, Enum):
    """Where the chaos command looks for workers: local processes, Kubernetes pods, or podman pods."""

    local = "local"
    k8s = "k8s"
    podman = "podman"


@dataclass(frozen=True)
class WorkerIdentity:
    """A Temporal worker identity in the SDK's default `pid@hostname` form."""

    pid: int
    hostname: str

    def __str__(self) -> str:
        return f"{self.pid}@{self.hostname}"


@dataclass(frozen=True)
class LocalWorker:
    """A worker process on this machine: its pid and command line."""

    pid: int
    argv: tuple[str, ...]


@dataclass(frozen=True)
class PodCandidate:
    """A worker pod that may be killed: its name and phase."""

    name: str
    phase: str


@dataclass(frozen=True)
class Kill:
    """One thing the chaos command killed, and why it was chosen."""

    kind: str  # "process" or "pod"
    name: str  # pid, or namespace/pod
    reason: str
    # preempt only: seconds from SIGTERM to the process's exit, and whether SIGKILL had to end it
    exited_after_s: float | None = None
    sigkilled: bool = False


# --------------------------------------------------------------------------- pure selection logic


def parse_worker_identity(identity: str) -> WorkerIdentity | None:
    """`"1234@host"` -> WorkerIdentity(1234, "host"); None for identities in any other form."""
    pid, sep, hostname = identity.partition("@")
    if not sep or not hostname or not pid.isdigit():
        return None
    return WorkerIdentity(int(pid), hostname)


def busy_identities(pending_activities: Iterable[Any]) -> set[WorkerIdentity]:
    """Identities of the workers running these pending activities (`PendingActivityInfo` messages).

    Only started activities count: a scheduled one still names the worker of its previous attempt,
    which may be the very worker an earlier kill took down.
    """
    from temporalio.api.enums.v1 import PendingActivityState

    running = {
        PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
        PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED,
    }
    found: set[WorkerIdentity] = set()
    for activity in pending_activities:
        if activity.state in running and (identity := parse_worker_identity(activity.last_worker_identity)):
            found.add(identity)
    return found


def _program_index(argv: Sequence[str]) -> int | None:
    for index, arg in enumerate(argv):
        name = os.path.basename(arg)
        if name == "bert-eval" or "bert_eval" in arg:
            return index
    return None


def is_training_worker_argv(argv: Sequence[str]) -> bool:
    """True for `bert-eval worker training` in any launch form (console script, `python -m bert_eval`).

    Arguments are matched one by one, so a shell whose single `-c` argument merely contains the
    words is not a worker.
    """
    start = _program_index(argv)
    if start is None:
        return False
    rest = list(argv[start + 1 :])
    return any(rest[i] == "worker" and rest[i + 1] == "training" for i in range(len(rest) - 1))


def _short_host(hostname: str) -> str:
    return hostname.split(".", 1)[0]


def choose_local_target(
    workers: Sequence[LocalWorker],
    busy: set[WorkerIdentity],
    *,
    hostname: str,
    prefer_busy: bool = True,
    rng: random.Random | None = None,
) -> tuple[LocalWorker, str] | None:
    """The process to kill and why, or None when there is no training worker."""
    if not workers:
        return None
    rng = rng or random.Random()
    if prefer_busy:
        busy_pids = {i.pid for i in busy if _short_host(i.hostname) == _short_host(hostname)}
        holding = [w for w in workers if w.pid in busy_pids]
        if holding:
            chosen = rng.choice(holding)
            return chosen, f"holds a running training activity (identity {chosen.pid}@{hostname})"
        return rng.choice(workers), "no local worker is known to hold a running training activity; picked any"
    return rng.choice(workers), "--any: picked any training worker"


def choose_pod_target(
    pods: Sequence[PodCandidate],
    busy: set[WorkerIdentity],
    *,
    prefer_busy: bool = True,
    rng: random.Random | None = None,
) -> tuple[PodCandidate, str] | None:
    """The pod to delete and why: busy pods first (when preferred), then Running ones."""
    if not pods:
        return None
    rng = rng or random.Random()
    busy_hosts = {_short_host(i.hostname) for i in busy} if prefer_busy else set()

    def rank(pod: PodCandidate) -> tuple[bool, bool]:
        return (pod.name in busy_hosts, pod.phase == "Running")

    best = max(rank(p) for p in pods)
    chosen = rng.choice([p for p in pods if rank(p) == best])
    is_busy, is_running = best
    if is_busy:
        identities = sorted(str(i) for i in busy if _short_host(i.hostname) == chosen.name)
        reason = f"holds a running training activity (identity {', '.join(identities)})"
    elif prefer_busy:
        reason = "no pod is known to hold a running training activity; picked " + (
            "a Running pod" if is_running else f"a {chosen.phase} pod"
        )
    else:
        reason = "--any: picked " + ("a Running pod" if is_running else f"a {chosen.phase} pod")
    return chosen, reason


# --------------------------------------------------------------------------- Temporal's view


async def _lookup_busy_identities() -> set[WorkerIdentity]:
    from temporalio.service import RPCError

    from bert_eval.settings import get_settings, task_queues
    from bert_eval.temporal.client import connect

    client = await connect()
    found: set[WorkerIdentity] = set()
    # Only this deployment's training queue: other releases on the namespace use other prefixes.
    query = f"{BUSY_TRAINING_QUERY} AND TaskQueue='{task_queues(get_settings())[0]}'"
    async for execution in client.list_workflows(query):
        try:
            description = await client.get_workflow_handle(execution.id, run_id=execution.run_id).describe()
        except RPCError:  # finished between listing and describing
            continue
        found |= busy_identities(description.raw_description.pending_activities)
    return found


def lookup_busy_identities(timeout_s: float = TEMPORAL_LOOKUP_TIMEOUT_S) -> set[WorkerIdentity]:
    """Workers holding a running training activity; empty (and a warning) when Temporal cannot tell."""
    try:
        found = asyncio.run(asyncio.wait_for(_lookup_busy_identities(), timeout_s))
    except Exception as exc:  # unreachable server, auth, timeouts: chaos goes on without the hint
        log.warning("cannot ask Temporal which training worker is busy; any worker may be killed", error=repr(exc))
        return set()
    log.info("busy training workers", identities=sorted(str(i) for i in found))
    return found


# --------------------------------------------------------------------------- local processes


def find_local_training_workers(proc_root: Path = Path("/proc")) -> list[LocalWorker]:
    """Training worker processes on this machine, from /proc/*/cmdline (never this process)."""
    own = os.getpid()
    workers = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        argv = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        if is_training_worker_argv(argv):
            workers.append(LocalWorker(pid=int(entry.name), argv=argv))
    return sorted(workers, key=lambda w: w.pid)


def _process_gone(pid: int, proc_root: Path = Path("/proc")) -> bool:
    """True once the process has exited (a zombie waiting for its parent counts as exited)."""
    try:
        stat_line = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat_line.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}


def preempt_process(
    pid: int,
    grace_s: float,
    *,
    gone: Callable[[int], bool] = _process_gone,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    send: Callable[[int, int], None] = os.kill,
) -> tuple[float, bool]:
    """SIGTERM `pid`, then SIGKILL it if it is still running `grace_s` seconds later, as a node drain does.

    Returns (seconds from SIGTERM until the process was seen gone, whether SIGKILL was sent).
    Raises ProcessLookupError when the process does not exist at SIGTERM time.
    """
    started = clock()
    send(pid, signal.SIGTERM)
    while clock() - started < grace_s:
        if gone(pid):
            return clock() - started, False
        sleep(0.05)
    if gone(pid):
        return clock() - started, False
    try:
        send(pid, signal.SIGKILL)
    except ProcessLookupError:  # exited between the check and the signal
        return clock() - started, False
    while not gone(pid):
        sleep(0.05)
    return clock() - started, True


def _preempt_local(worker: LocalWorker, reason: str, grace_s: float) -> Kill | None:
    try:
        exited_after_s, sigkilled = preempt_process(worker.pid, grace_s)
    except ProcessLookupError:
        log.warning("training worker exited before it could be preempted", pid=worker.pid)
        return None
    log.info(
        "preempted training worker process",
        pid=worker.pid,
        grace_s=grace_s,
        exited_after_s=round(exited_after_s, 2),
        sigkilled=sigkilled,
        reason=reason,
    )
    return Kill(kind="process", name=str(worker.pid), reason=reason, exited_after_s=exited_after_s, sigkilled=sigkilled)


def _kill_one_local(
    busy: set[WorkerIdentity], *, prefer_busy: bool, rng: random.Random, grace_s: float | None = None
) -> Kill | None:
    hostname = socket.gethostname()
    choice = choose_local_target(
        find_local_training_workers(), busy, hostname=hostname, prefer_busy=prefer_busy, rng=rng
    )
    if choice is None:
        log.warning("no local training worker process found (looked for `bert-eval worker training`)")
        return None
    worker, reason = choice
    if grace_s is not None:
        return _preempt_local(worker, reason, grace_s)
    try:
        os.kill(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        log.warning("training worker exited before it could be killed", pid=worker.pid)
        return None
    kill = Kill(kind="process", name=str(worker.pid), reason=reason)
    log.info("killed training worker process", pid=worker.pid, command=" ".join(worker.argv), reason=reason)
    return kill


# --------------------------------------------------------------------------- Kubernetes pods


class PodApi(Protocol):
    """The part of `kubernetes.client.CoreV1Api` the chaos command uses."""

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        """The pods of `namespace` (a `V1PodList`), filtered by `kwargs` (e.g. `label_selector`)."""

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> Any:
        """Delete pod `name` (`grace_period_seconds=0` in `kwargs`: at once)."""


def kubernetes_core_api() -> PodApi:
    """CoreV1Api from the in-cluster service account, else from kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api: PodApi = client.CoreV1Api()  # type: ignore[assignment]  # its generated signatures spell out every keyword
    return api


def default_namespace(namespace_file: Path = IN_CLUSTER_NAMESPACE_FILE) -> str:
    """The pod's own namespace in a cluster, else `default`."""
    try:
        return namespace_file.read_text().strip() or "default"
    except OSError:
        return "default"


def _pod_candidates(api: PodApi, namespace: str, selector: str) -> list[PodCandidate]:
    pods = api.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        PodCandidate(name=pod.metadata.name, phase=(pod.status.phase if pod.status else None) or "Unknown")
        for pod in pods
        if pod.metadata.deletion_timestamp is None  # already going away
    ]


def _kill_one_pod(
    api: PodApi,
    namespace: str,
    selector: str,
    busy: set[WorkerIdentity],
    *,
    prefer_busy: bool,
    rng: random.Random,
    grace_s: float | None = None,
) -> Kill | None:
    from kubernetes.client.exceptions import ApiException

    choice = choose_pod_target(_pod_candidates(api, namespace, selector), busy, prefer_busy=prefer_busy, rng=rng)
    if choice is None:
        log.warning("no training worker pod found", namespace=namespace, selector=selector)
        return None
    pod, reason = choice
    try:
        # The kubelet sends SIGTERM and, grace_period_seconds later, SIGKILL: a drain's eviction.
        api.delete_namespaced_pod(pod.name, namespace, grace_period_seconds=0 if grace_s is None else int(grace_s))
    except ApiException as exc:
        if exc.status != 404:
            raise
        log.warning("training worker pod vanished before it could be deleted", pod=pod.name, namespace=namespace)
        return None
    log.info(
        "deleted training worker pod",
        pod=pod.name,
        namespace=namespace,
        phase=pod.phase,
        grace_s=grace_s,
        reason=reason,
    )
    return Kill(kind="pod", name=f"{namespace}/{pod.name}", reason=reason)


# --------------------------------------------------------------------------- podman pods


def _podman_pod_candidates(selector: str) -> list[PodCandidate]:
    """Pods whose labels match every `key=value` of the selector (`podman kube play` copies the
    pod template's labels onto the pod)."""
    filters = [f"--filter=label={term.strip()}" for term in selector.split(",") if term.strip()]
    listed = subprocess.run(
        ["podman", "pod", "ps", "--format", "json", *filters], check=True, capture_output=True, text=True
    ).stdout
    return [PodCandidate(name=pod["Name"], phase=pod["Status"]) for pod in json.loads(listed or "[]")]


def _kill_one_podman_pod(
    selector: str, busy: set[WorkerIdentity], *, prefer_busy: bool, rng: random.Random, grace_s: float | None = None
) -> Kill | None:
    choice = choose_pod_target(_podman_pod_candidates(selector), busy, prefer_busy=prefer_busy, rng=rng)
    if choice is None:
        log.warning("no training worker pod found in podman", selector=selector)
        return None
    pod, reason = choice
    if grace_s is None:
        command = ["podman", "pod", "kill", "--signal", "KILL", pod.name]
    else:  # SIGTERM to every container, SIGKILL after the timeout
        command = ["podman", "pod", "stop", "--time", str(int(grace_s)), pod.name]
    subprocess.run(command, check=True, capture_output=True, text=True)
    log.info("killed podman training worker pod", pod=pod.name, status=pod.phase, reason=reason)
    return Kill(kind="pod", name=f"podman/{pod.name}", reason=reason)


# --------------------------------------------------------------------------- the loop


def kill_training_workers(
    *,
    target: Target = Target.local,
    namespace: str | None = None,
    selector: str = DEFAULT_SELECTOR,
    times: int = 1,
    every_s: float = 60.0,
    prefer_busy: bool = True,
    busy_lookup: Callable[[], set[WorkerIdentity]] | None = None,
    pod_api: PodApi | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    grace_s: float | None = None,
) -> list[Kill]:
    """Kill one training worker `times` times, `every_s` seconds apart; returns what was killed.

    Temporal is asked afresh before every kill (`busy_lookup`, by default Temporal from the
    TEMPORAL_* settings), since the busy worker changes once a killed one's activity is retried.
    `grace_s` None kills at once (SIGKILL); a number preempts: SIGTERM, then SIGKILL after that many
    seconds. Raises ValueError for times < 1 or a negative grace.
    """
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    if grace_s is not None and grace_s < 0:
        raise ValueError(f"grace must be >= 0 seconds, got {grace_s}")
    rng = rng or random.Random()
    lookup = busy_lookup or lookup_busy_identities
    if target is Target.k8s:
        namespace = namespace or default_namespace()
        pod_api = pod_api or kubernetes_core_api()
    kills: list[Kill] = []
    for round_index in range(times):
        if round_index:
            sleep(every_s)
        busy = lookup() if prefer_busy else set()
        if target is Target.k8s:
            assert pod_api is not None and namespace is not None
            kill = _kill_one_pod(pod_api, namespace, selector, busy, prefer_busy=prefer_busy, rng=rng, grace_s=grace_s)
        elif target is Target.podman:
            kill = _kill_one_podman_pod(selector, busy, prefer_busy=prefer_busy, rng=rng, grace_s=grace_s)
        else:
            kill = _kill_one_local(busy, prefer_busy=prefer_busy, rng=rng, grace_s=grace_s)
        if kill is not None:
            kills.append(kill)
    return kills


# --------------------------------------------------------------------------- CLI

chaos_app = typer.Typer(
    help="Fault injection: kill or preempt training workers to watch training resume.", no_args_is_help=True
)


@chaos_app.command("kill")
def kill(
    target: Annotated[Target, typer.Option(help="local processes, Kubernetes pods or podman pods")] = Target.local,
    namespace: Annotated[
        str | None, typer.Option(help="k8s: namespace of the pods (default: this pod's namespace, else `default`)")
    ] = None,
    selector: Annotated[
        str, typer.Option(help="k8s, podman: label selector of training worker pods")
    ] = DEFAULT_SELECTOR,
    release: Annotated[
        str | None, typer.Option(help="k8s, podman: only pods of this Helm release (app.kubernetes.io/instance)")
    ] = None,
    every: Annotated[float, typer.Option(min=0, help="seconds between kills when --times > 1")] = 60.0,
    times: Annotated[int, typer.Option(min=1, help="how many kills")] = 1,
    prefer_busy: Annotated[
        bool, typer.Option("--prefer-busy/--any", help="prefer a worker that holds a running training activity")
    ] = True,
) -> list[Kill]:
    """Kill a training worker (once, or --times N every --every SECONDS), a busy one when Temporal can tell."""
    from bert_eval.settings import get_settings

    telemetry.configure_logging(fmt=get_settings().log_format)
    kills = kill_training_workers(
        target=target,
        namespace=namespace,
        selector=release_selector(selector, release),
        times=times,
        every_s=every,
        prefer_busy=prefer_busy,
    )
    for done in kills:
        typer.echo(f"killed {done.kind} {done.name}: {done.reason}")
    if not kills:
        typer.echo("no training worker was killed", err=True)
        raise typer.Exit(1)
    return kills


@chaos_app.command("preempt")
def preempt(
    grace: Annotated[float, typer.Option(min=0, help="seconds between SIGTERM and SIGKILL (GKE spot: 15-30)")] = 15.0,
    target: Annotated[Target, typer.Option(help="local processes, Kubernetes pods or podman pods")] = Target.local,
    namespace: Annotated[
        str | None, typer.Option(help="k8s: namespace of the pods (default: this pod's namespace, else `default`)")
    ] = None,
    selector: Annotated[
        str, typer.Option(help="k8s, podman: label selector of training worker pods")
    ] = DEFAULT_SELECTOR,
    release: Annotated[
        str | None, typer.Option(help="k8s, podman: only pods of this Helm release (app.kubernetes.io/instance)")
    ] = None,
    prefer_busy: Annotated[
        bool, typer.Option("--prefer-busy/--any", help="prefer a worker that holds a running training activity")
    ] = True,
) -> list[Kill]:
    """Preempt a training worker as a node drain or spot reclaim does: SIGTERM, then SIGKILL after --grace seconds."""
    from bert_eval.settings import get_settings

    telemetry.configure_logging(fmt=get_settings().log_format)
    kills = kill_training_workers(
        target=target,
        namespace=namespace,
        selector=release_selector(selector, release),
        prefer_busy=prefer_busy,
        grace_s=grace,
    )
    for done in kills:
        if done.exited_after_s is None:
            typer.echo(f"preempted {done.kind} {done.name} (grace {grace:g}s): {done.reason}")
        else:
            ending = "SIGKILL after the grace period" if done.sigkilled else "exited on SIGTERM"
            typer.echo(
                f"preempted {done.kind} {done.name} (grace {grace:g}s): {ending}, "
                f"{done.exited_after_s:.1f}s after SIGTERM; {done.reason}"
            )
    if not kills:
        typer.echo("no training worker was preempted", err=True)
        raise typer.Exit(1)
    return kills
