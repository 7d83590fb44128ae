"""The chart's own pod specs, run for real with `podman kube play`: a small experiment submitted by the
starter Job's pod, the training worker pod killed after its first checkpoint and brought back, and
the run completed with a resume and the same metrics as an uninterrupted run of the same spec.

The chart is rendered by the real Helm engine (helm-python-sdk) with the kind profile
(examples/values-kind.yaml) plus what a user sets anyway: the starter with a small experiment, and the
SST-2 mirror as `dataMirror`. Podman plays the rendered Temporal dev Deployment (with its data PVC),
the shared runs PVC, the training and eval Deployments and the starter Job's pod spec unchanged,
except for the image names and what podman cannot provide, each named here:
- Image names: `make images-local` stores `bert-eval-eval:dev` as `localhost/bert-eval-eval:dev`
  (and so on); every rendered image that exists under `localhost/` is given that name.
- Service DNS: podman has no Services, so every client pod gets a `hostAliases` entry mapping the
  Temporal Service name the chart put in TEMPORAL_ADDRESS to the Temporal pod's IP.
- Jobs: `podman kube play` (4.3) plays no Job, so the starter Job's pod template is played as a Pod
  with the Job's name; the Job controller's retries are not exercised.
- The kind profile's hostPath PersistentVolume: podman provides every PVC as a named volume, so
  persistence.hostPath is off and the runs PVC becomes a podman volume shared by all pods.
- Host ports: podman 4.3 publishes every containerPort on the host (hostPort defaults to the
  containerPort), so the two workers' metrics ports would collide; each containerPort gets a free
  hostPort. The pods are still reached on their own IPs and containerPorts, as in a cluster.
- Controllers: after the kill the test plays the training Deployment again (`--replace`), as the
  ReplicaSet controller would create a new pod; probes are checked by the test, not by a kubelet.

Reference run: after the killed run completes, the starter submits the same run spec again under
another experiment and run id (a second render of the chart, as a changed `starter.experiment` would be on
`helm upgrade`), on the same pods and images, uninterrupted. Both must report the same metrics and loss.
Submitting them one after the other lets the killed run resume as soon as its heartbeat times out, so
"kill -> resumed step" is what a user waits for.

Two releases on one Temporal: releases `team-a` (the dev Temporal server, `taskQueuePrefix: team-a`) and
`team-b` (`temporal.mode=external` pointed at team-a's Temporal Service, `taskQueuePrefix: team-b`), each
with its own runs PVC, workers and starter, submit one tiny experiment each at the same time. Each run's
directory must appear only on its own release's volume, and Temporal's histories must show every task of
each experiment on that release's queues, run by that release's pods (worker identities `pid@<pod name>`).

The training image, with GKE's driver mount (/usr/local/nvidia/lib64) present but empty: the dynamic
loader searches it for libcuda.so.1, and with BERT_EVAL_REQUIRE_GPU=1 the worker exits naming that path.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.ports import free_port

from bert_eval.core.storage.checkpoints import CheckpointStore

from .conftest import MEASURED, REPO, Podman

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

CHART = REPO / "charts" / "bert-eval"
KIND_VALUES = CHART / "examples" / "values-kind.yaml"
RELEASE = "bert-eval"
NAMESPACE = "bert-eval"
DATA_CLAIM = "bert-eval-sst2-mirror"
TRAIN = {
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 1.0e-4,
    "max_seq_length": 64,
    # 192 steps, a checkpoint every 24: on an idle 2-core machine MiniLM trains ~7 steps/s here, and the
    # kill lands ~5 s (the chaos command's start and its Temporal lookup) after the first checkpoint, so
    # the run must still be training well past that. With 256 rows it could end first (CI, 2026-11-30).
    "max_train_samples": 1536,
    "seed": 42,
    "checkpoint_every_steps": 24,
}


# Two releases side by side only need each run to finish: 4 steps, 32 validation rows.
TINY_TRAIN = {**TRAIN, "max_seq_length": 32, "max_train_samples": 32, "checkpoint_every_steps": 2}


def experiment(
    experiment_id: str, run_id: str, train: dict[str, Any] = TRAIN, eval_samples: int = 128
) -> dict[str, Any]:
    run = {
        "run_id": run_id,
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "dataset": "glue/sst2",
        "train": train,
        "eval": {"split": "validation", "max_eval_samples": eval_samples},
    }
    return {"experiment_id": experiment_id, "runs": [run]}


KILLED = experiment("cluster-resume", "cluster-killed")
REFERENCE = experiment("cluster-reference", "cluster-straight")
TRAINING_IMAGE = "localhost/bert-eval-training:dev"
POD_READY_TIMEOUT_S = 600
RUN_TIMEOUT_S = 1500


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render_chart(values: dict[str, Any], release: str = RELEASE) -> list[dict[str, Any]]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if not path.endswith("NOTES.txt"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def _component(objects: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] == kind and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


def _one(objects: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = _component(objects, kind, component)
    assert len(found) == 1, f"expected one {kind} for {component}, rendered {len(found)}"
    return found[0]


def _env(container: dict[str, Any], name: str) -> str:
    return next(e["value"] for e in container.get("env", []) if e["name"] == name)


def _named_port(container: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def _dump(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


class Stack:
    """One release's played pods: names, IPs, and the host path of its runs volume."""

    def __init__(self, podman: Podman, release: str = RELEASE) -> None:
        self.podman = podman
        self.release = release

    def play(self, path: Path, *, replace: bool = False) -> None:
        self.podman("kube", "play", *(["--replace"] if replace else []), str(path), timeout=600)

    def pod(self, component: str) -> str:
        names = self.podman.out(
            "pod",
            "ps",
            "--filter",
            f"label=app.kubernetes.io/component={component}",
            "--filter",
            f"label=app.kubernetes.io/instance={self.release}",
            "--format",
            "{{.Name}}",
        ).split()
        assert len(names) == 1, f"expected one {component} pod of release {self.release}, found {names}"
        return names[0]

    def container(self, component: str, name: str) -> str:
        return f"{self.pod(component)}-{name}"

    def pod_ip(self, component: str) -> str:
        infra = self.podman.out("pod", "inspect", self.pod(component), "--format", "{{.InfraContainerID}}")
        networks = json.loads(self.podman.out("inspect", infra, "--format", "{{json .NetworkSettings.Networks}}"))
        return next(iter(networks.values()))["IPAddress"]

    def volume_path(self, name: str) -> Path:
        return Path(self.podman.out("volume", "inspect", name, "--format", "{{.Mountpoint}}"))

    def exec(self, container: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.podman("exec", container, *argv, check=False)

    def logs(self, container: str) -> str:
        done = self.podman("logs", "--tail", "60", container, check=False)
        return done.stdout + done.stderr


def _remove_everything(podman: Podman, files: list[Path], pod_labels: list[str], volumes: list[str]) -> None:
    for path in files:
        if path.exists():
            podman("kube", "down", str(path), check=False)
    for label in pod_labels:
        for name in podman(
            "pod", "ps", "--filter", f"label={label}", "--format", "{{.Name}}", check=False
        ).stdout.split():
            podman("pod", "rm", "--force", "--time", "0", name, check=False)
    for volume in volumes:
        podman("volume", "rm", "--force", volume, check=False)


def _http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def _wait_http_ok(url: str, timeout_s: float, what: str, logs: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if _http_get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{what} did not answer 200 on {url} within {timeout_s}s; logs:\n{logs()}")


def _wait_tcp(host: str, port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{what} did not accept connections on {host}:{port} within {timeout_s}s")


def _first_checkpoint(runs_dir: Path, run_ids: list[str], timeout_s: float, logs: Any) -> tuple[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run_id in run_ids:
            latest = CheckpointStore(runs_dir / "runs" / run_id / "checkpoints").latest_complete()
            if latest is not None:
                return run_id, latest.step
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of {run_ids} under {runs_dir} within {timeout_s}s; training logs:\n{logs()}")


def _values(submitted: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kind profile, plus a starter for this experiment, the SST-2 mirror and any overrides."""
    values = _merge(
        yaml.safe_load(KIND_VALUES.read_text()),
        {
            # The kind cluster `make deploy` builds serves KEDA's and the Prometheus Operator's APIs.
            "assumeApiVersions": ["keda.sh/v1alpha1", "monitoring.coreos.com/v1"],
            "persistence": {"hostPath": {"enabled": False}},
            "dataMirror": {"existingClaim": DATA_CLAIM},
            "starter": {
                "enabled": True,
                "experiment": submitted,
                "extraArgs": ["--json", f"/bert_runs/cluster-test/{submitted['experiment_id']}.json"],
            },
        },
    )
    return _merge(values, overrides or {})


def _podman_ready(podman: Podman, workload: dict[str, Any], aliases: list[dict[str, Any]] | None) -> None:
    """The substitutions of the module docstring, applied to one workload's pod template."""
    pod_spec = workload["spec"]["template"]["spec"]
    for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
        local = f"localhost/{container['image']}"
        assert podman("image", "exists", local, check=False).returncode == 0, (
            f"image {local} is missing; run `make images-local`"
        )
        container["image"] = local
        for port in container.get("ports", []):
            port.setdefault("hostPort", free_port())
    if aliases:
        pod_spec["hostAliases"] = aliases


def _starter(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(experiment ConfigMap, the starter Job's pod template as a Pod named like the Job)."""
    job = _one(objects, "Job", "starter")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": job["metadata"]["name"], "labels": job["spec"]["template"]["metadata"]["labels"]},
        "spec": job["spec"]["template"]["spec"],
    }
    return _one(objects, "ConfigMap", "starter"), pod


def test_chart_pods_run_a_killed_training_to_the_same_result(podman: Podman, data_dir: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    objects = render_chart(_values(KILLED))
    reference_objects = render_chart(_values(REFERENCE))
    temporal = _one(objects, "Deployment", "temporal")
    temporal_pvcs = _component(objects, "PersistentVolumeClaim", "temporal")
    runs_pvc = _one(objects, "PersistentVolumeClaim", "runs-storage")
    training = _one(objects, "Deployment", "training-worker")
    eval_worker = _one(objects, "Deployment", "eval-worker")
    experiment_cm, starter_pod = _starter(objects)
    reference_cm, reference_pod = _starter(reference_objects)
    assert reference_pod["metadata"]["name"] != starter_pod["metadata"]["name"]  # a new experiment is a new Job
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    metrics_service = _one(objects, "Service", "metrics")

    # Ports as the chart wires them: probes and the ServiceMonitor both go through the port named
    # `metrics`; the Service maps the ServiceMonitor's port name to that container port.
    worker_containers = {
        "training-worker": training["spec"]["template"]["spec"]["containers"][0],
        "eval-worker": eval_worker["spec"]["template"]["spec"]["containers"][0],
    }
    [endpoint] = monitor["spec"]["endpoints"]
    service_port = next(p for p in metrics_service["spec"]["ports"] if p["name"] == endpoint["port"])
    probe_ports = {}
    for component, container in worker_containers.items():
        port = _named_port(container, service_port["targetPort"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert _named_port(container, container[probe]["httpGet"]["port"]) == port
        probe_ports[component] = (
            port,
            container["livenessProbe"]["httpGet"]["path"],
            container["readinessProbe"]["httpGet"]["path"],
        )

    # podman keeps a played ConfigMap as a volume of the same name.
    volumes = [
        DATA_CLAIM,
        runs_pvc["metadata"]["name"],
        experiment_cm["metadata"]["name"],
        *(p["metadata"]["name"] for p in temporal_pvcs),
    ]
    files = {name: tmp_path / f"{name}.yaml" for name in ("temporal", "workers", "training", "starter", "reference")}
    labels = [f"app.kubernetes.io/instance={RELEASE}"]
    _remove_everything(podman, [], labels, volumes)  # leftovers of an interrupted earlier run
    stack = Stack(podman)
    try:
        # The SST-2 mirror as the existing claim the chart mounts read-only at dataMirror.mountPath.
        podman("volume", "create", DATA_CLAIM)
        shutil.copytree(data_dir / "glue" / "sst2", stack.volume_path(DATA_CLAIM) / "glue" / "sst2")

        t0 = time.monotonic()
        _podman_ready(podman, temporal, None)
        stack.play(_dump(files["temporal"], *temporal_pvcs, temporal))
        grpc_port = _named_port(temporal["spec"]["template"]["spec"]["containers"][0], "grpc")
        temporal_ip = stack.pod_ip("temporal")
        _wait_tcp(temporal_ip, grpc_port, 120, "the Temporal dev pod")

        # Service DNS stand-in: the Temporal Service name from TEMPORAL_ADDRESS -> the Temporal pod.
        temporal_host, _, temporal_port = _env(worker_containers["training-worker"], "TEMPORAL_ADDRESS").rpartition(":")
        assert int(temporal_port) == grpc_port
        aliases = [{"ip": temporal_ip, "hostnames": [temporal_host, temporal_host.split(".")[0]]}]
        for workload in (training, eval_worker):
            _podman_ready(podman, workload, aliases)
        for pod in (starter_pod, reference_pod):
            _podman_ready(podman, {"spec": {"template": pod}}, aliases)

        _dump(files["training"], training)
        stack.play(_dump(files["workers"], runs_pvc, eval_worker))
        stack.play(files["training"])
        ips = {component: stack.pod_ip(component) for component in worker_containers}
        for component, (port, _health, ready) in probe_ports.items():
            container = stack.container(component, worker_containers[component]["name"])
            _wait_http_ok(
                f"http://{ips[component]}:{port}{ready}",
                POD_READY_TIMEOUT_S,
                component,
                lambda c=container: stack.logs(c),
            )
        MEASURED["pods ready (Temporal, training, eval; from first kube play)"] = f"{time.monotonic() - t0:.0f} s"

        # From inside the containers: the pod's securityContext took effect.
        for component, spec in worker_containers.items():
            container = stack.container(component, spec["name"])
            assert stack.exec(container, "id", "-u").stdout.strip() == "10001"
            write = stack.exec(container, "touch", "/opt/venv/probe")
            assert write.returncode != 0 and "Read-only file system" in write.stderr, write
            port, health, _ = probe_ports[component]
            for path in (health, endpoint["path"]):
                probe = (
                    f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}{path}', timeout=5).status)"
                )
                assert stack.exec(container, "python", "-c", probe).stdout.strip() == "200", (component, path)
            # As Prometheus would scrape it: from outside the pod, on the pod IP.
            status, body = _http_get(f"http://{ips[component]}:{port}{endpoint['path']}")
            assert status == 200 and "bert_eval_worker_up" in body, component

        runs_dir = stack.volume_path(runs_pvc["metadata"]["name"])
        stack.play(_dump(files["starter"], experiment_cm, starter_pod))
        training_container = stack.container("training-worker", worker_containers["training-worker"]["name"])
        [killed_run] = [run["run_id"] for run in KILLED["runs"]]
        _, checkpoint_step = _first_checkpoint(
            runs_dir, [killed_run], RUN_TIMEOUT_S, lambda: stack.logs(training_container)
        )

        # The kill, through the chaos command's podman target; Temporal names the busy pod.
        killed_at_wall = time.time()
        chaos = subprocess.run(
            [sys.executable, "-m", "bert_eval", "chaos", "kill", "--target", "podman"],
            env={**podman.env, "TEMPORAL_ADDRESS": f"{temporal_ip}:{grpc_port}", "BERT_EVAL_LOG_FORMAT": "console"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert chaos.returncode == 0, chaos.stdout + chaos.stderr
        assert f"podman/{stack.pod('training-worker')}" in chaos.stdout
        ended = (runs_dir / "runs" / killed_run / "training-summary.json").exists()
        assert "holds a running training activity" in chaos.stdout, (chaos.stdout, f"training already ended: {ended}")
        state = podman.out("inspect", training_container, "--format", "{{.State.Status}}")
        assert state != "running", f"training container still {state} after the kill"
        # A controller replaces the pod: the same Deployment, played again.
        stack.play(files["training"], replace=True)

        killed = _finished(stack, starter_pod, runs_dir, KILLED)
        assert killed["training"]["resumes"] >= 1
        assert killed["training"]["resumed_from_steps"][0] >= checkpoint_step > 0  # from a checkpoint, not step 0
        events = [
            json.loads(line) for line in (runs_dir / "runs" / killed_run / "events.jsonl").read_text().splitlines()
        ]
        resume = next(e for e in events if e["event"] == "resume")
        MEASURED["kill -> resumed step (heartbeat timeout 30 s included)"] = (
            f"{resume['time'] - killed_at_wall:.0f} s (killed after checkpoint-{checkpoint_step}, "
            f"resumed from step {resume.get('from_step')})"
        )

        # The same spec again, never interrupted, through the starter of a second render.
        stack.podman("kube", "down", str(files["starter"]))
        stack.podman("volume", "rm", "--force", experiment_cm["metadata"]["name"])
        stack.play(_dump(files["reference"], reference_cm, reference_pod))
        straight = _finished(stack, reference_pod, runs_dir, REFERENCE)
        assert straight["training"]["resumes"] == 0
        assert killed["metrics"] and killed["metrics"] == pytest.approx(straight["metrics"], rel=1e-6, abs=1e-9)
        assert killed["training"]["final_loss"] == pytest.approx(straight["training"]["final_loss"], rel=1e-6)
        assert killed["training"]["steps"] == straight["training"]["steps"]

        # The checkpoints, seen from a pod on the shared volume.
        eval_container = stack.container("eval-worker", worker_containers["eval-worker"]["name"])
        listed = stack.exec(eval_container, "ls", f"/bert_runs/runs/{killed_run}/checkpoints")
        assert listed.returncode == 0 and "checkpoint-" in listed.stdout, listed
        MEASURED["whole cluster test"] = f"{time.monotonic() - started:.0f} s"
        MEASURED["metrics (killed run = uninterrupted run)"] = json.dumps(killed["metrics"], sort_keys=True)
    finally:
        _remove_everything(podman, list(files.values()), labels, volumes)
        leftovers = podman.out(
            "pod", "ps", "--filter", f"label=app.kubernetes.io/instance={RELEASE}", "--format", "{{.Name}}"
        )
        assert not leftovers, f"pods left behind: {leftovers}"
        remaining = set(podman.out("volume", "ls", "--format", "{{.Name}}").split())
        assert not remaining & set(volumes), f"volumes left behind: {remaining & set(volumes)}"


def _finished(stack: Stack, starter_pod: dict[str, Any], runs_dir: Path, submitted: dict[str, Any]) -> dict[str, Any]:
    """Wait for the starter pod to exit 0; its one run's record from `bert-eval run --json`."""
    container = f"{starter_pod['metadata']['name']}-{starter_pod['spec']['containers'][0]['name']}"
    exit_code = stack.podman.out("wait", container, timeout=RUN_TIMEOUT_S)
    assert exit_code == "0", f"starter exited {exit_code}:\n{stack.logs(container)}"
    [record] = json.loads((runs_dir / "cluster-test" / f"{submitted['experiment_id']}.json").read_text())
    assert record["status"] == "completed", record
    return record


# --------------------------------------------------------------------------- the training image on a GKE GPU node

# Where GKE's device plugin mounts the node's NVIDIA driver libraries, without setting any environment.
GKE_DRIVER_DIR = "/usr/local/nvidia/lib64"


def test_training_image_searches_the_gke_driver_directory_and_names_it_without_a_gpu(
    podman: Podman, tmp_path: Path
) -> None:
    # The training image (built even where a profile trains on the eval image) with GKE's driver mount,
    # here empty: a node whose driver is missing, or a pod that got no GPU.
    driver_dir = tmp_path / "nvidia-lib64"
    driver_dir.mkdir()
    run = [
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{driver_dir}:{GKE_DRIVER_DIR}:ro",
    ]
    env = dict(
        item.split("=", 1)
        for item in json.loads(podman.out("image", "inspect", TRAINING_IMAGE, "--format", "{{json .Config.Env}}"))
    )
    library_path = env.get("LD_LIBRARY_PATH", "")
    assert GKE_DRIVER_DIR in library_path.split(":"), f"{TRAINING_IMAGE} has LD_LIBRARY_PATH={library_path!r}"

    # The dynamic loader, asked for the driver library as torch asks for it, looks in the mounted directory.
    load = "import ctypes\ntry:\n    ctypes.CDLL('libcuda.so.1')\nexcept OSError as exc:\n    print(exc)"
    loader = podman(
        *run, "-e", "LD_DEBUG=libs", "--entrypoint", "python", TRAINING_IMAGE, "-c", load, check=False, timeout=120
    )
    assert loader.returncode == 0, loader
    assert f"trying file={GKE_DRIVER_DIR}/libcuda.so.1" in loader.stderr, loader.stderr[-3000:]

    # Asked for a GPU and finding none, the worker exits at once, before it needs Temporal, naming where it looked.
    no_gpu = podman(*run, "-e", "BERT_EVAL_REQUIRE_GPU=1", TRAINING_IMAGE, check=False, timeout=300)
    assert no_gpu.returncode == 1, no_gpu
    assert "sees no CUDA device" in no_gpu.stderr and f"LD_LIBRARY_PATH={library_path}" in no_gpu.stderr, no_gpu.stderr


# --------------------------------------------------------------------------- two releases on one Temporal

# Two releases in one namespace, each with its own task-queue prefix and runs volume: team-a runs the dev
# Temporal server, team-b is pointed at it (temporal.mode=external), as a second team would be.
TEAMS = ("team-a", "team-b")


def _workflow_trace(address: str, experiment_id: str) -> dict[str, dict[str, Any]]:
    """Per workflow of the experiment (found by its BertExperimentId): its task queue, the task queues
    its activities were scheduled on, and the worker identities that ran its workflow and activity tasks
    (by activity type)."""
    import asyncio

    from temporalio.client import Client

    async def trace() -> dict[str, dict[str, Any]]:
        client = await Client.connect(address)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while len(found) < 3 and time.monotonic() < deadline:  # coordinator, training, eval
            found = {}
            async for execution in client.list_workflows(f'BertExperimentId="{experiment_id}"'):
                found[execution.id] = {"task_queue": execution.task_queue, "activity_queues": set(), "workers": {}}
            await asyncio.sleep(0.5)
        for workflow_id, seen in found.items():
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            scheduled: dict[int, str] = {}
            for event in history.events:
                if event.HasField("activity_task_scheduled_event_attributes"):
                    attributes = event.activity_task_scheduled_event_attributes
                    scheduled[event.event_id] = attributes.activity_type.name
                    seen["activity_queues"].add(attributes.task_queue.name)
                elif event.HasField("activity_task_started_event_attributes"):
                    attributes = event.activity_task_started_event_attributes
                    seen["workers"].setdefault(scheduled[attributes.scheduled_event_id], set()).add(attributes.identity)
                elif event.HasField("workflow_task_completed_event_attributes"):
                    seen["workers"].setdefault("workflow tasks", set()).add(
                        event.workflow_task_completed_event_attributes.identity
                    )
        return found

    return asyncio.run(trace())


def _host(identity: str) -> str:
    """The hostname of a worker identity (`pid@hostname`, the SDK's default); a pod's hostname is its name."""
    return identity.partition("@")[2].split(".")[0]


def test_two_releases_on_one_temporal_keep_to_their_own_workers_and_volumes(
    podman: Podman, data_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    submitted = {
        team: experiment(f"{team}-sst2", f"{team}-minilm", train=TINY_TRAIN, eval_samples=32) for team in TEAMS
    }
    objects = {"team-a": render_chart(_values(submitted["team-a"], {"taskQueuePrefix": "team-a"}), release="team-a")}
    temporal = _one(objects["team-a"], "Deployment", "temporal")
    temporal_pvcs = _component(objects["team-a"], "PersistentVolumeClaim", "temporal")
    temporal_address = _env(
        _one(objects["team-a"], "Deployment", "training-worker")["spec"]["template"]["spec"]["containers"][0],
        "TEMPORAL_ADDRESS",
    )
    objects["team-b"] = render_chart(
        _values(
            submitted["team-b"],
            {"taskQueuePrefix": "team-b", "temporal": {"mode": "external", "address": temporal_address}},
        ),
        release="team-b",
    )
    assert not _component(objects["team-b"], "Deployment", "temporal"), (
        "team-b must use team-a's Temporal, not run its own"
    )

    releases: dict[str, dict[str, Any]] = {}
    for team in TEAMS:
        config_map, starter_pod = _starter(objects[team])
        releases[team] = {
            "runs_pvc": _one(objects[team], "PersistentVolumeClaim", "runs-storage"),
            "training": _one(objects[team], "Deployment", "training-worker"),
            "eval": _one(objects[team], "Deployment", "eval-worker"),
            "config_map": config_map,
            "starter": starter_pod,
            "stack": Stack(podman, team),
        }
    runs_claims = {team: r["runs_pvc"]["metadata"]["name"] for team, r in releases.items()}
    assert len(set(runs_claims.values())) == 2, runs_claims
    volumes = [
        DATA_CLAIM,
        *runs_claims.values(),
        *(r["config_map"]["metadata"]["name"] for r in releases.values()),
        *(p["metadata"]["name"] for p in temporal_pvcs),
    ]
    files = {
        name: tmp_path / f"{name}.yaml"
        for name in ("temporal", *(f"{t}-{part}" for t in TEAMS for part in ("workers", "starter")))
    }
    labels = [f"app.kubernetes.io/instance={team}" for team in TEAMS]
    _remove_everything(podman, [], labels, volumes)
    try:
        podman("volume", "create", DATA_CLAIM)
        shutil.copytree(
            data_dir / "glue" / "sst2", releases["team-a"]["stack"].volume_path(DATA_CLAIM) / "glue" / "sst2"
        )

        t0 = time.monotonic()
        _podman_ready(podman, temporal, None)
        releases["team-a"]["stack"].play(_dump(files["temporal"], *temporal_pvcs, temporal))
        grpc_port = _named_port(temporal["spec"]["template"]["spec"]["containers"][0], "grpc")
        temporal_ip = releases["team-a"]["stack"].pod_ip("temporal")
        _wait_tcp(temporal_ip, grpc_port, 120, "the Temporal dev pod")
        temporal_host = temporal_address.rpartition(":")[0]
        aliases = [{"ip": temporal_ip, "hostnames": [temporal_host, temporal_host.split(".")[0]]}]

        for team, release in releases.items():
            for workload in (release["training"], release["eval"]):
                assert (
                    _env(workload["spec"]["template"]["spec"]["containers"][0], "BERT_EVAL_TASK_QUEUE_PREFIX") == team
                )
                _podman_ready(podman, workload, aliases)
            _podman_ready(podman, {"spec": {"template": release["starter"]}}, aliases)
            release["stack"].play(
                _dump(files[f"{team}-workers"], release["runs_pvc"], release["eval"], release["training"])
            )
        for team, release in releases.items():
            stack = release["stack"]
            for component in ("training-worker", "eval-worker"):
                container = release["training" if component == "training-worker" else "eval"]["spec"]["template"][
                    "spec"
                ]["containers"][0]
                port = _named_port(container, container["readinessProbe"]["httpGet"]["port"])
                _wait_http_ok(
                    f"http://{stack.pod_ip(component)}:{port}{container['readinessProbe']['httpGet']['path']}",
                    POD_READY_TIMEOUT_S,
                    f"{team} {component}",
                    functools.partial(stack.logs, stack.container(component, container["name"])),
                )
        MEASURED["two releases: pods ready (Temporal + 2 x training, eval)"] = f"{time.monotonic() - t0:.0f} s"

        t1 = time.monotonic()
        for team, release in releases.items():
            release["stack"].play(_dump(files[f"{team}-starter"], release["config_map"], release["starter"]))
        records = {}
        for team, release in releases.items():
            release["runs_dir"] = release["stack"].volume_path(runs_claims[team])
            records[team] = _finished(release["stack"], release["starter"], release["runs_dir"], submitted[team])
        MEASURED["two releases: both tiny experiments, submitted together -> completed"] = (
            f"{time.monotonic() - t1:.0f} s"
        )

        for team, release in releases.items():
            [other] = [t for t in TEAMS if t != team]
            own_run, other_run = f"{team}-minilm", f"{other}-minilm"
            assert records[team]["training"]["steps"] > 0 and records[team]["metrics"], records[team]
            # Each run's files exist only on its own release's volume.
            assert (release["runs_dir"] / "runs" / own_run / "training-summary.json").is_file()
            assert not (release["runs_dir"] / "runs" / other_run).exists(), f"{other_run} wrote to {team}'s volume"

            # Temporal's record: every task of the experiment went to this release's queues and its pods.
            queues = {f"{team}-bert-training-task-queue", f"{team}-bert-eval-task-queue"}
            pods = {"training": release["stack"].pod("training-worker"), "eval": release["stack"].pod("eval-worker")}
            trace = _workflow_trace(f"{temporal_ip}:{grpc_port}", submitted[team]["experiment_id"])
            assert len(trace) == 3, (
                f"expected the coordinator, training and eval workflows of {team}, found {sorted(trace)}"
            )
            for workflow_id, seen in trace.items():
                assert {seen["task_queue"], *seen["activity_queues"]} <= queues, (team, workflow_id, seen)
                hosts = {_host(identity) for identities in seen["workers"].values() for identity in identities}
                assert hosts and hosts <= set(pods.values()), (team, workflow_id, seen["workers"], pods)
            fine_tune = [seen["workers"]["fine_tune"] for seen in trace.values() if "fine_tune" in seen["workers"]]
            assert [{_host(i) for i in identities} for identities in fine_tune] == [{pods["training"]}], (team, trace)
            training_queue = {seen["task_queue"] for seen in trace.values() if "fine_tune" in seen["workers"]}
            assert training_queue == {f"{team}-bert-training-task-queue"}, (team, trace)
        MEASURED["two releases: whole test"] = f"{time.monotonic() - started:.0f} s"
    finally:
        _remove_everything(podman, list(files.values()), labels, volumes)
        for label in labels:
            leftovers = podman.out("pod", "ps", "--filter", f"label={label}", "--format", "{{.Name}}")
            assert not leftovers, f"pods left behind: {leftovers}"
        remaining = set(podman.out("volume", "ls", "--format", "{{.Name}}").split())
        assert not remaining & set(volumes), f"volumes left behind: {remaining & set(volumes)}"
