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

Reference run: the experiment holds two runs with the same spec under two run ids; the training
worker takes one at a time (concurrency 1), so the kill interrupts one of them and the other runs
uninterrupted in the same images on the same pods. Both must report the same metrics and loss.
"""

from __future__ import annotations

import copy
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

from bert_eval.core.checkpoints import CheckpointStore

from .conftest import MEASURED, REPO, Podman

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

CHART = REPO / "charts" / "bert-eval"
KIND_VALUES = CHART / "examples" / "values-kind.yaml"
RELEASE = "bert-eval"
NAMESPACE = "bert-eval"
DATA_CLAIM = "bert-eval-sst2-mirror"
RESULTS = "cluster-test/results.json"  # under the runs volume
TRAIN = {
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 5.0e-5,
    "max_seq_length": 64,
    "max_train_samples": 512,
    "seed": 42,
    "checkpoint_every_steps": 8,
}
EXPERIMENT = {
    "experiment_id": "cluster-resume",
    "runs": [
        {
            "run_id": run_id,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "dataset": "glue/sst2",
            "train": TRAIN,
            "eval": {"split": "validation", "max_eval_samples": 128},
        }
        for run_id in ("cluster-a", "cluster-b")
    ],
}
TRAINING_IMAGE = "localhost/bert-eval-training:dev"
POD_READY_TIMEOUT_S = 600
RUN_TIMEOUT_S = 1500


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if not path.endswith("NOTES.txt"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def _component(objects: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


def _one(objects: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = _component(objects, kind, component)
    assert len(found) == 1, f"expected one {kind} for {component}, rendered {len(found)}"
    return found[0]


def _env(container: dict[str, Any], name: str) -> str:
    return next(e["value"] for e in container.get("env", []) if e["name"] == name)


def _named_port(container: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dump(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


class Stack:
    """The played pods: names, IPs, and the host path of the shared runs volume."""

    def __init__(self, podman: Podman, workdir: Path) -> None:
        self.podman = podman
        self.workdir = workdir
        self.played: list[Path] = []
        self.volumes: list[str] = []

    def play(self, path: Path, *, replace: bool = False) -> None:
        self.podman("kube", "play", *(["--replace"] if replace else []), str(path), timeout=600)
        if path not in self.played:
            self.played.append(path)

    def pod(self, component: str) -> str:
        names = self.podman.out(
            "pod", "ps", "--filter", f"label=app.kubernetes.io/component={component}",
            "--filter", f"label=app.kubernetes.io/instance={RELEASE}", "--format", "{{.Name}}",
        ).split()
        assert len(names) == 1, f"expected one {component} pod, found {names}"
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
        for name in podman("pod", "ps", "--filter", f"label={label}", "--format", "{{.Name}}", check=False).stdout.split():
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


def test_chart_pods_run_a_killed_training_to_the_same_result(podman: Podman, data_dir: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    values = _merge(
        yaml.safe_load(KIND_VALUES.read_text()),
        {
            "persistence": {"hostPath": {"enabled": False}},
            "dataMirror": {"existingClaim": DATA_CLAIM},
            "starter": {"enabled": True, "experiment": EXPERIMENT, "extraArgs": ["--json", f"/bert_runs/{RESULTS}"]},
        },
    )
    objects = render_chart(values)
    temporal = _one(objects, "Deployment", "temporal")
    temporal_pvcs = _component(objects, "PersistentVolumeClaim", "temporal")
    runs_pvc = _one(objects, "PersistentVolumeClaim", "runs-storage")
    training = _one(objects, "Deployment", "training-worker")
    eval_worker = _one(objects, "Deployment", "eval-worker")
    job = _one(objects, "Job", "starter")
    experiment_cm = _one(objects, "ConfigMap", "starter")
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    metrics_service = _one(objects, "Service", "metrics")

    # Every image the pods use is one `make images-local` built (nothing is pulled).
    for workload in (temporal, training, eval_worker, job):
        pod_spec = workload["spec"]["template"]["spec"]
        for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
            local = f"localhost/{container['image']}"
            assert podman("image", "exists", local, check=False).returncode == 0, (
                f"image {local} is missing; run `make images-local`"
            )
            container["image"] = local

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
        for probe in ("startupProbe", "livenessProbe"):
            assert _named_port(container, container[probe]["httpGet"]["port"]) == port
        probe_ports[component] = (port, container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"])

    # The training image (built even where a profile trains on the eval image): asked for a GPU and
    # finding none, its worker exits at once with the reason, before it needs Temporal.
    no_gpu = podman("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "-e", "BERT_EVAL_REQUIRE_GPU=true",
                    TRAINING_IMAGE, check=False, timeout=300)
    assert no_gpu.returncode == 1 and "sees no CUDA device" in no_gpu.stderr, no_gpu

    # podman keeps a played ConfigMap as a volume of the same name.
    volumes = [DATA_CLAIM, runs_pvc["metadata"]["name"], experiment_cm["metadata"]["name"], *(p["metadata"]["name"] for p in temporal_pvcs)]
    files = {
        "temporal": tmp_path / "temporal.yaml",
        "workers": tmp_path / "workers.yaml",
        "training": tmp_path / "training.yaml",
        "starter": tmp_path / "starter.yaml",
    }
    labels = [f"app.kubernetes.io/instance={RELEASE}"]
    _remove_everything(podman, [], labels, volumes)  # leftovers of an interrupted earlier run
    stack = Stack(podman, tmp_path)
    try:
        # The SST-2 mirror as the existing claim the chart mounts read-only at dataMirror.mountPath.
        podman("volume", "create", DATA_CLAIM)
        mirror = stack.volume_path(DATA_CLAIM) / "glue" / "sst2"
        shutil.copytree(data_dir / "glue" / "sst2", mirror)

        for workload in (temporal, training, eval_worker, job):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                for port in container.get("ports", []):
                    port.setdefault("hostPort", _free_port())
        t0 = time.monotonic()
        stack.play(_dump(files["temporal"], *temporal_pvcs, temporal))
        grpc_port = _named_port(temporal["spec"]["template"]["spec"]["containers"][0], "grpc")
        temporal_ip = stack.pod_ip("temporal")
        _wait_tcp(temporal_ip, grpc_port, 120, "the Temporal dev pod")

        # Service DNS stand-in: the Temporal Service name from TEMPORAL_ADDRESS -> the Temporal pod.
        temporal_host, _, temporal_port = _env(worker_containers["training-worker"], "TEMPORAL_ADDRESS").rpartition(":")
        assert int(temporal_port) == grpc_port
        aliases = [{"ip": temporal_ip, "hostnames": [temporal_host, temporal_host.split(".")[0]]}]
        for workload in (training, eval_worker, job):
            workload["spec"]["template"]["spec"]["hostAliases"] = aliases
        starter_pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": job["metadata"]["name"], "labels": job["spec"]["template"]["metadata"]["labels"]},
            "spec": job["spec"]["template"]["spec"],
        }

        _dump(files["training"], training)
        stack.play(_dump(files["workers"], runs_pvc, eval_worker))
        stack.play(files["training"])
        ips = {component: stack.pod_ip(component) for component in worker_containers}
        for component, (port, health, ready) in probe_ports.items():
            container = stack.container(component, worker_containers[component]["name"])
            _wait_http_ok(f"http://{ips[component]}:{port}{ready}", POD_READY_TIMEOUT_S, component, lambda c=container: stack.logs(c))
        MEASURED["pods ready (Temporal, training, eval; from first kube play)"] = f"{time.monotonic() - t0:.0f} s"

        # From inside the containers: the pod's securityContext took effect.
        for component, spec in worker_containers.items():
            container = stack.container(component, spec["name"])
            assert stack.exec(container, "id", "-u").stdout.strip() == "10001"
            write = stack.exec(container, "touch", "/opt/venv/probe")
            assert write.returncode != 0 and "Read-only file system" in write.stderr, write
            port, health, _ = probe_ports[component]
            for path in (health, endpoint["path"]):
                probe = f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}{path}', timeout=5).status)"
                assert stack.exec(container, "python", "-c", probe).stdout.strip() == "200", (component, path)
            # As Prometheus would scrape it: from outside the pod, on the pod IP.
            status, body = _http_get(f"http://{ips[component]}:{port}{endpoint['path']}")
            assert status == 200 and "bert_eval_worker_up" in body, component

        runs_dir = stack.volume_path(runs_pvc["metadata"]["name"])
        stack.play(_dump(files["starter"], experiment_cm, starter_pod))
        training_container = stack.container("training-worker", worker_containers["training-worker"]["name"])
        run_ids = [run["run_id"] for run in EXPERIMENT["runs"]]
        first_run, checkpoint_step = _first_checkpoint(runs_dir, run_ids, RUN_TIMEOUT_S, lambda: stack.logs(training_container))

        # The kill, through the chaos command's podman target; Temporal names the busy pod.
        killed_at_wall = time.time()
        chaos = subprocess.run(
            [sys.executable, "-m", "bert_eval", "chaos", "kill", "--target", "podman"],
            env={**podman.env, "TEMPORAL_ADDRESS": f"{temporal_ip}:{grpc_port}", "BERT_EVAL_LOG_FORMAT": "console"},
            capture_output=True, text=True, timeout=120,
        )
        assert chaos.returncode == 0, chaos.stdout + chaos.stderr
        assert f"podman/{stack.pod('training-worker')}" in chaos.stdout
        assert "holds a running training activity" in chaos.stdout, chaos.stdout
        state = podman.out("inspect", training_container, "--format", "{{.State.Status}}")
        assert state != "running", f"training container still {state} after the kill"
        # A controller replaces the pod: the same Deployment, played again.
        stack.play(files["training"], replace=True)

        starter_container = f"{starter_pod['metadata']['name']}-{starter_pod['spec']['containers'][0]['name']}"
        exit_code = podman.out("wait", starter_container, timeout=RUN_TIMEOUT_S)
        starter_logs = stack.logs(starter_container)
        assert exit_code == "0", f"starter exited {exit_code}:\n{starter_logs}"

        records = json.loads((runs_dir / RESULTS).read_text())
        for record in records:
            assert record["status"] == "completed", record
        # The kill hit the run training at the time (normally the one whose checkpoint was awaited).
        [killed] = [r for r in records if r["training"]["resumes"] >= 1]
        [straight] = [r for r in records if r is not killed]
        killed_run = killed["run_id"]
        assert killed["training"]["resumed_from_steps"][0] > 0  # from a checkpoint, not from step 0
        assert straight["training"]["resumes"] == 0
        assert killed["metrics"] and killed["metrics"] == pytest.approx(straight["metrics"], rel=1e-6, abs=1e-9)
        assert killed["training"]["final_loss"] == pytest.approx(straight["training"]["final_loss"], rel=1e-6)
        assert killed["training"]["steps"] == straight["training"]["steps"]

        events = [json.loads(line) for line in (runs_dir / "runs" / killed_run / "events.jsonl").read_text().splitlines()]
        resume = next(e for e in events if e["event"] == "resume")
        MEASURED["kill -> resumed step (incl. heartbeat timeout)"] = (
            f"{resume['time'] - killed_at_wall:.0f} s (resumed {killed_run} from step {resume.get('from_step')}; "
            f"first checkpoint seen: {first_run} step {checkpoint_step})"
        )

        # The checkpoints, seen from a pod on the shared volume.
        eval_container = stack.container("eval-worker", worker_containers["eval-worker"]["name"])
        listed = stack.exec(eval_container, "ls", f"/bert_runs/runs/{killed_run}/checkpoints")
        assert listed.returncode == 0 and "checkpoint-" in listed.stdout, listed
        MEASURED["whole cluster test"] = f"{time.monotonic() - started:.0f} s"
        MEASURED["metrics (killed run = uninterrupted run)"] = json.dumps(killed["metrics"], sort_keys=True)
    finally:
        _remove_everything(podman, list(files.values()), labels, volumes)
        leftovers = podman.out("pod", "ps", "--filter", f"label=app.kubernetes.io/instance={RELEASE}", "--format", "{{.Name}}")
        assert not leftovers, f"pods left behind: {leftovers}"
        remaining = set(podman.out("volume", "ls", "--format", "{{.Name}}").split())
        assert not remaining & set(volumes), f"volumes left behind: {remaining & set(volumes)}"
