"""`bert-eval chaos kill`, every target in one place: the selection logic on plain data; Kubernetes mode
against a thin fake of the two CoreV1Api calls it makes; podman mode against a fake `podman` that
records its calls; local mode against real child processes that look like workers; and, last, against
real workers on a real Temporal server, where it kills the busy training worker and the run resumes."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from support.harness import Stack, run_on_two_training_workers
from support.ports import free_port
from support.specs import LONG, tiny_run
from typer.testing import CliRunner

from bert_eval import chaos
from bert_eval.chaos import (
    LocalWorker,
    PodCandidate,
    Target,
    WorkerIdentity,
    busy_identities,
    choose_local_target,
    choose_pod_target,
    is_training_worker_argv,
    kill_training_workers,
    parse_worker_identity,
)

TRAINING = {"app.kubernetes.io/name": "bert-eval", "app.kubernetes.io/component": "training-worker"}
EVAL = {"app.kubernetes.io/name": "bert-eval", "app.kubernetes.io/component": "eval-worker"}


# --------------------------------------------------------------------------- pure selection logic


def test_parse_worker_identity() -> None:
    assert parse_worker_identity("4242@bert-eval-training-worker-7d9c-abcde") == WorkerIdentity(
        4242, "bert-eval-training-worker-7d9c-abcde"
    )
    for identity in ("", "worker-1", "@host", "12@", "abc@host"):
        assert parse_worker_identity(identity) is None


def test_only_started_activities_make_a_worker_busy() -> None:
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.api.workflow.v1 import PendingActivityInfo

    pending = [
        PendingActivityInfo(state=PendingActivityState.PENDING_ACTIVITY_STATE_STARTED, last_worker_identity="11@pod-a"),
        # Retrying after its worker died: still names the dead worker.
        PendingActivityInfo(
            state=PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED, last_worker_identity="12@pod-b"
        ),
        PendingActivityInfo(
            state=PendingActivityState.PENDING_ACTIVITY_STATE_STARTED, last_worker_identity="custom-id"
        ),
    ]
    assert busy_identities(pending) == {WorkerIdentity(11, "pod-a")}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/venv/bin/python3", "/venv/bin/bert-eval", "worker", "training"], True),
        (["bert-eval", "worker", "training"], True),
        (["python", "-m", "bert_eval", "worker", "training"], True),
        (["/usr/bin/python", "/src/services/bert_eval/cli.py", "worker", "training"], True),
        (["bert-eval", "worker", "eval"], False),
        (["bert-eval", "chaos", "kill"], False),
        (["sh", "-c", "bert-eval worker training"], False),
        (["python", "train.py", "worker", "training"], False),
        (["bert-eval"], False),
    ],
)
def test_training_worker_command_lines(argv: list[str], expected: bool) -> None:
    assert is_training_worker_argv(argv) is expected


def test_local_choice_prefers_the_worker_holding_an_activity_on_this_host() -> None:
    workers = [
        LocalWorker(100, ("bert-eval", "worker", "training")),
        LocalWorker(200, ("bert-eval", "worker", "training")),
    ]
    for seed in range(5):
        chosen, reason = choose_local_target(
            workers, {WorkerIdentity(200, "laptop")}, hostname="laptop", rng=random.Random(seed)
        )
        assert chosen.pid == 200 and "running training activity" in reason
    # The same pid on another machine says nothing about local processes.
    chosen, reason = choose_local_target(
        workers, {WorkerIdentity(200, "other")}, hostname="laptop", rng=random.Random(0)
    )
    assert "no local worker is known" in reason
    # --any ignores Temporal's view.
    picks = {
        choose_local_target(
            workers, {WorkerIdentity(200, "laptop")}, hostname="laptop", prefer_busy=False, rng=random.Random(s)
        )[0].pid
        for s in range(20)
    }
    assert picks == {100, 200}
    assert choose_local_target([], set(), hostname="laptop") is None


def test_pod_choice_prefers_busy_then_running_pods() -> None:
    pods = [PodCandidate("w-pending", "Pending"), PodCandidate("w-idle", "Running"), PodCandidate("w-busy", "Running")]
    busy = {WorkerIdentity(7, "w-busy")}
    chosen, reason = choose_pod_target(pods, busy)
    assert chosen.name == "w-busy" and "7@w-busy" in reason
    for seed in range(10):
        chosen, reason = choose_pod_target(pods, set(), rng=random.Random(seed))
        assert chosen.phase == "Running" and "no pod is known" in reason
    # A busy pod that is not Running still wins: it is the one holding the activity.
    chosen, _ = choose_pod_target([PodCandidate("w-busy", "Unknown"), PodCandidate("w-idle", "Running")], busy)
    assert chosen.name == "w-busy"
    chosen, reason = choose_pod_target(pods, busy, prefer_busy=False, rng=random.Random(0))
    assert chosen.phase == "Running" and reason.startswith("--any")
    assert choose_pod_target([], busy) is None


# --------------------------------------------------------------------------- Kubernetes mode


def _documented_params(method: Any) -> set[str]:
    return set(re.findall(r":param (\w+):", method.__doc__ or ""))


class FakeCoreV1Api:
    """The two CoreV1Api calls chaos makes, over an in-memory pod list. Keyword arguments are
    checked against the real client's documented parameters, so a typo fails here too."""

    LIST_PARAMS = _documented_params(k8s.CoreV1Api.list_namespaced_pod)
    DELETE_PARAMS = _documented_params(k8s.CoreV1Api.delete_namespaced_pod)

    def __init__(self, pods: list[k8s.V1Pod]) -> None:
        self.pods = pods
        self.deleted: list[tuple[str, str, dict[str, Any]]] = []

    @staticmethod
    def _matches(selector: str | None, labels: dict[str, str]) -> bool:
        if not selector:
            return True
        pairs = (term.split("=", 1) for term in selector.split(","))
        return all(labels.get(key.strip()) == value.strip() for key, value in pairs)

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> k8s.V1PodList:
        assert set(kwargs) <= self.LIST_PARAMS, set(kwargs) - self.LIST_PARAMS
        items = [
            p
            for p in self.pods
            if p.metadata.namespace == namespace
            and self._matches(kwargs.get("label_selector"), p.metadata.labels or {})
        ]
        return k8s.V1PodList(items=items)

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> k8s.V1Pod:
        assert set(kwargs) <= self.DELETE_PARAMS, set(kwargs) - self.DELETE_PARAMS
        for pod in self.pods:
            if pod.metadata.name == name and pod.metadata.namespace == namespace:
                self.pods.remove(pod)
                self.deleted.append((namespace, name, kwargs))
                return pod
        raise ApiException(status=404, reason="Not Found")


def pod(
    name: str,
    labels: dict[str, str],
    *,
    phase: str = "Running",
    namespace: str = "bert-eval",
    terminating: bool = False,
) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels=labels,
            deletion_timestamp="2026-01-01T00:00:00Z" if terminating else None,
        ),
        status=k8s.V1PodStatus(phase=phase),
    )


def test_fake_rejects_arguments_the_real_client_does_not_take() -> None:
    api = FakeCoreV1Api([])
    with pytest.raises(AssertionError):
        api.list_namespaced_pod("bert-eval", label_selctor="x=y")
    with pytest.raises(AssertionError):
        api.delete_namespaced_pod("p", "bert-eval", grace_period=0)


def test_k8s_kill_deletes_the_busy_training_pod_immediately() -> None:
    api = FakeCoreV1Api(
        [
            pod("bert-eval-training-worker-a", TRAINING),
            pod("bert-eval-training-worker-b", TRAINING),
            pod("bert-eval-eval-worker-c", EVAL),  # busy on the eval queue: never a target
            pod("bert-eval-training-worker-d", TRAINING, namespace="other"),
        ]
    )
    busy = {WorkerIdentity(1, "bert-eval-training-worker-b"), WorkerIdentity(1, "bert-eval-eval-worker-c")}
    kills = kill_training_workers(target=Target.k8s, namespace="bert-eval", busy_lookup=lambda: busy, pod_api=api)
    assert api.deleted == [("bert-eval", "bert-eval-training-worker-b", {"grace_period_seconds": 0})]
    assert [(k.kind, k.name) for k in kills] == [("pod", "bert-eval/bert-eval-training-worker-b")]
    assert "running training activity" in kills[0].reason


def test_k8s_kill_without_temporal_picks_a_running_pod_and_skips_terminating_ones() -> None:
    api = FakeCoreV1Api(
        [
            pod("w-terminating", TRAINING, terminating=True),
            pod("w-pending", TRAINING, phase="Pending"),
            pod("w-running", TRAINING),
        ]
    )
    kills = kill_training_workers(target=Target.k8s, namespace="bert-eval", busy_lookup=set, pod_api=api)
    assert [name for _, name, _ in api.deleted] == ["w-running"]
    assert "no pod is known" in kills[0].reason


def test_k8s_kill_repeats_every_n_seconds_and_asks_temporal_each_time() -> None:
    api = FakeCoreV1Api([pod(f"w-{i}", TRAINING) for i in range(4)])
    sleeps: list[float] = []
    lookups = iter([{WorkerIdentity(1, "w-2")}, {WorkerIdentity(1, "w-0")}, set()])
    kills = kill_training_workers(
        target=Target.k8s,
        namespace="bert-eval",
        times=3,
        every_s=45,
        busy_lookup=lambda: next(lookups),
        pod_api=api,
        sleep=sleeps.append,
        rng=random.Random(0),
    )
    assert sleeps == [45, 45]
    names = [name for _, name, _ in api.deleted]
    assert names[:2] == ["w-2", "w-0"] and len(names) == len(set(names)) == 3
    assert len(kills) == 3


def test_k8s_kill_with_no_pods_kills_nothing() -> None:
    api = FakeCoreV1Api([pod("e", EVAL)])
    assert kill_training_workers(target=Target.k8s, namespace="bert-eval", busy_lookup=set, pod_api=api) == []
    assert api.deleted == []


def test_default_namespace_comes_from_the_service_account(tmp_path: Path) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("bert-eval\n")
    assert chaos.default_namespace(namespace_file) == "bert-eval"
    assert chaos.default_namespace(tmp_path / "missing") == "default"


def test_busy_lookup_tolerates_an_unreachable_temporal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")  # nobody listens there
    assert chaos.lookup_busy_identities(timeout_s=10) == set()


def test_cli_kill_k8s(monkeypatch: pytest.MonkeyPatch) -> None:
    from bert_eval.cli import app

    api = FakeCoreV1Api([pod("w-idle", TRAINING), pod("w-busy", TRAINING)])
    monkeypatch.setattr(chaos, "kubernetes_core_api", lambda: api)
    monkeypatch.setattr(chaos, "lookup_busy_identities", lambda: {WorkerIdentity(3, "w-busy")})
    result = CliRunner().invoke(app, ["chaos", "kill", "--target", "k8s", "--namespace", "bert-eval"])
    assert result.exit_code == 0, result.output
    assert "killed pod bert-eval/w-busy" in result.output
    result = CliRunner().invoke(app, ["chaos", "kill", "--target", "k8s", "--namespace", "empty", "--any"])
    assert result.exit_code == 1
    assert [name for _, name, _ in api.deleted] == ["w-busy"]


def test_cli_preempt_k8s_deletes_the_busy_pod_with_the_grace_period(monkeypatch: pytest.MonkeyPatch) -> None:
    from bert_eval.cli import app

    api = FakeCoreV1Api([pod("w-idle", TRAINING), pod("w-busy", TRAINING)])
    monkeypatch.setattr(chaos, "kubernetes_core_api", lambda: api)
    monkeypatch.setattr(chaos, "lookup_busy_identities", lambda: {WorkerIdentity(3, "w-busy")})
    result = CliRunner().invoke(
        app, ["chaos", "preempt", "--grace", "15", "--target", "k8s", "--namespace", "bert-eval"]
    )
    assert result.exit_code == 0, result.output
    assert "preempted pod bert-eval/w-busy (grace 15s)" in result.output
    # The kubelet sends SIGTERM, then SIGKILL after 15 s: what a drain's eviction does.
    assert api.deleted == [("bert-eval", "w-busy", {"grace_period_seconds": 15})]


# --------------------------------------------------------------------------- local mode, real processes

SLEEPER = textwrap.dedent(
    """\
    import time
    time.sleep(120)
    """
)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen]]:
    """Child processes that look like training workers, and decoys that must survive."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bert-eval", "other-tool"):
        (bin_dir / name).write_text(SLEEPER)
    python = sys.executable
    argv = {
        "worker-a": [python, str(bin_dir / "bert-eval"), "worker", "training"],
        "worker-b": [python, str(bin_dir / "bert-eval"), "worker", "training"],
        # `exec -a` sets argv[0] to bert-eval, as a console script launched by name would.
        "worker-exec-a": [
            "bash",
            "-c",
            f'exec -a bert-eval {python} -c "import time; time.sleep(120)" worker training',
        ],
        "eval-worker": [python, str(bin_dir / "bert-eval"), "worker", "eval"],
        "other-tool": [python, str(bin_dir / "other-tool"), "worker", "training"],
        "shell": ["sh", "-c", "sleep 120; : bert-eval worker training"],
    }
    spawned = {name: subprocess.Popen(args, start_new_session=True) for name, args in argv.items()}
    try:
        deadline = time.monotonic() + 10  # until exec has replaced the command lines
        while time.monotonic() < deadline:
            found = {w.pid for w in chaos.find_local_training_workers()}
            if {spawned[n].pid for n in ("worker-a", "worker-b", "worker-exec-a")} <= found:
                break
            time.sleep(0.05)
        yield spawned
    finally:
        for process in spawned.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_local_scan_finds_exactly_the_training_workers(processes: dict[str, subprocess.Popen]) -> None:
    ours = {p.pid: name for name, p in processes.items()}
    found = {ours[w.pid] for w in chaos.find_local_training_workers() if w.pid in ours}
    assert found == {"worker-a", "worker-b", "worker-exec-a"}


def test_local_kill_takes_down_only_the_busy_worker(processes: dict[str, subprocess.Popen]) -> None:
    victim = processes["worker-b"]
    busy = {WorkerIdentity(victim.pid, socket.gethostname())}
    kills = kill_training_workers(target=Target.local, busy_lookup=lambda: busy)
    assert [(k.kind, k.name) for k in kills] == [("process", str(victim.pid))]
    assert "running training activity" in kills[0].reason
    assert victim.wait(timeout=10) == -signal.SIGKILL
    survivors = {name: p.poll() for name, p in processes.items() if p is not victim}
    assert survivors == dict.fromkeys(survivors), f"only the busy worker may die: {survivors}"


def test_local_any_choice_stays_within_training_workers(processes: dict[str, subprocess.Popen]) -> None:
    ours = {p.pid for p in processes.values()}
    workers = [w for w in chaos.find_local_training_workers() if w.pid in ours]
    allowed = {processes[n].pid for n in ("worker-a", "worker-b", "worker-exec-a")}
    for seed in range(10):
        chosen, reason = choose_local_target(
            workers, set(), hostname=socket.gethostname(), prefer_busy=False, rng=random.Random(seed)
        )
        assert chosen.pid in allowed and reason.startswith("--any")


# --------------------------------------------------------------------------- podman mode

PODS = [
    {"Name": "bert-eval-training-worker-pod-0", "Status": "Running"},
    {"Name": "bert-eval-training-worker-pod-1", "Status": "Running"},
]


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "bin" / "podman"
    script.parent.mkdir()
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"if sys.argv[1:3] == ['pod', 'ps']: print({json.dumps(json.dumps(PODS))})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_podman_target_kills_the_busy_pod(fake_podman: Path) -> None:
    busy = {WorkerIdentity(1, "bert-eval-training-worker-pod-1")}
    [kill] = kill_training_workers(target=Target.podman, busy_lookup=lambda: busy, rng=random.Random(0))
    assert kill.name == "podman/bert-eval-training-worker-pod-1"
    assert "holds a running training activity" in kill.reason
    calls = [json.loads(line) for line in fake_podman.read_text().splitlines()]
    assert "--filter=label=app.kubernetes.io/component=training-worker" in calls[0]
    assert calls[-1] == ["pod", "kill", "--signal", "KILL", "bert-eval-training-worker-pod-1"]


def test_podman_target_filters_on_every_selector_term(fake_podman: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kills = kill_training_workers(
        target=Target.podman,
        selector="app.kubernetes.io/component=nothing-here,tier=x",
        busy_lookup=set,
        rng=random.Random(0),
    )
    # The fake lists pods whatever the filter; what matters is that every selector term became a filter.
    calls = [json.loads(line) for line in fake_podman.read_text().splitlines()]
    assert {"--filter=label=app.kubernetes.io/component=nothing-here", "--filter=label=tier=x"} <= set(calls[0])
    assert [k.name for k in kills] in (
        ["podman/bert-eval-training-worker-pod-0"],
        ["podman/bert-eval-training-worker-pod-1"],
    )


# --------------------------------------------------------------------------- real workers, real server


@pytest.mark.integration
def test_chaos_kill_targets_the_busy_training_worker_and_training_resumes(stack: Stack, tiny_model_dir: Path) -> None:
    # Started with subprocess: `chaos kill --target local` finds workers by their command line, so they
    # cannot be paced; 750 steps keep training going while the chaos command starts, even on a loaded machine.
    spec = tiny_run(tiny_model_dir, "chaotic", **{**LONG, "max_train_samples": 6000})
    busy, idle, background = run_on_two_training_workers(
        stack, tiny_model_dir, "chaotic", heartbeat_timeout_s=5, spec=spec, fork=False
    )

    chaos = subprocess.run(
        [sys.executable, "-m", "bert_eval", "chaos", "kill", "--target", "local"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chaos.returncode == 0, chaos.stderr
    assert f"killed process {busy.pid}" in chaos.stdout
    assert busy.process.wait(timeout=10) == -9
    assert idle.process.poll() is None

    [run] = background.result(timeout_s=300).runs
    assert run.status == "completed", run.error
    assert run.training.resumes >= 1 and run.training.resumed_from_steps[0] > 0


def test_release_option_limits_the_kill_to_that_releases_pods(fake_podman: Path) -> None:
    from typer.testing import CliRunner

    from bert_eval.chaos import chaos_app

    done = CliRunner().invoke(chaos_app, ["kill", "--target", "podman", "--release", "team-a", "--any"])
    assert done.exit_code == 0, done.output
    calls = [json.loads(line) for line in fake_podman.read_text().splitlines()]
    assert {
        "--filter=label=app.kubernetes.io/component=training-worker",
        "--filter=label=app.kubernetes.io/instance=team-a",
    } <= set(calls[0])
