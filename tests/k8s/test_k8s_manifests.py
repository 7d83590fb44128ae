"""manifests/, kind-config.yaml, the Makefile's Kubernetes section and the Dockerfiles: checked
statically (no cluster, no Docker), against Kubernetes 1.33 and against the chart they go with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.k8s import (
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    Rendered,
    assert_hardened,
    env_of,
    labels_match,
    parse_bert_eval_command,
    pod_templates,
)

Manifests = dict[str, list[dict[str, Any]]]


def _one(manifests: Manifests, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for docs in manifests.values() for o in docs if o["kind"] == kind and name in (None, o["metadata"]["name"])
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_every_manifest_is_valid_for_kubernetes_1_33(manifest_objects: Manifests) -> None:
    expected = {
        "namespace.yaml",
        "experiment-configmap.yaml",
        "starter-job.yaml",
        "chaos-rbac.yaml",
        "chaos-job.yaml",
        "chaos-cronjob.yaml",
    }
    assert expected <= set(manifest_objects)
    count = 0
    for filename, docs in manifest_objects.items():
        assert docs, f"{filename} is empty"
        for obj in docs:
            try:
                kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{filename}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
            count += 1
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == NAMESPACE, f"{filename}: {obj['kind']} outside {NAMESPACE}"
    print(f"\nvalidated {count} objects in manifests/")


def test_namespace_enforces_the_restricted_pod_security_standard(manifest_objects: Manifests) -> None:
    namespace = _one(manifest_objects, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_manifest_container_is_hardened(manifest_objects: Manifests) -> None:
    templates = [(f"{name}:{o['kind']}", t) for name, docs in manifest_objects.items() for o, t in pod_templates(docs)]
    assert len(templates) == 3
    for owner, template in templates:
        assert_hardened(owner, template["spec"])


def test_chaos_role_may_only_read_and_delete_pods_in_its_namespace(manifest_objects: Manifests) -> None:
    assert not [
        o for docs in manifest_objects.values() for o in docs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")
    ]
    role = _one(manifest_objects, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]}]
    binding = _one(manifest_objects, "RoleBinding")
    account = _one(manifest_objects, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    for kind in ("Job", "CronJob"):
        owner = _one(manifest_objects, kind, "bert-eval-chaos")
        ((_, template),) = pod_templates([owner])
        assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
        assert template["spec"]["automountServiceAccountToken"] is True  # it calls the Kubernetes API


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_chaos_runs_a_real_chaos_kill_against_the_charts_training_pods(
    kind: str, manifest_objects: Manifests, rendered_profiles: dict[str, Rendered]
) -> None:
    ((_, template),) = pod_templates([_one(manifest_objects, kind, "bert-eval-chaos")])
    (container,) = template["spec"]["containers"]
    command, params = parse_bert_eval_command(container["args"])
    assert command == ["chaos", "kill"]
    assert params["target"].value == "k8s"
    assert params["namespace"] is None  # the pod's own namespace
    selector = dict(part.split("=", 1) for part in params["selector"].split(","))
    for profile in ("defaults", "examples/kind"):
        rendered = rendered_profiles[profile]
        training = rendered.workload("training-worker")["spec"]["template"]["metadata"]["labels"]
        assert labels_match(selector, training)
        for other in ("eval-worker", "temporal"):
            assert not labels_match(selector, rendered.workload(other)["spec"]["template"]["metadata"]["labels"])
    # It asks the same Temporal as the workers which training worker is busy.
    worker_env = env_of(
        rendered_profiles["examples/kind"].workload("training-worker")["spec"]["template"]["spec"]["containers"][0]
    )
    env = env_of(container)
    assert env["TEMPORAL_ADDRESS"]["value"] == worker_env["TEMPORAL_ADDRESS"]["value"]
    assert env["TEMPORAL_NAMESPACE"]["value"] == worker_env["TEMPORAL_NAMESPACE"]["value"]


def test_chaos_cronjob_starts_suspended_and_never_overlaps(manifest_objects: Manifests) -> None:
    cron = _one(manifest_objects, "CronJob")
    assert cron["spec"]["suspend"] is True
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_starter_job_runs_the_example_experiment_against_the_chart(
    manifest_objects: Manifests, rendered_profiles: dict[str, Rendered], tmp_path: Path
) -> None:
    from bert_eval.experiment import load_experiment

    job = _one(manifest_objects, "Job", "bert-eval-starter")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command, params = parse_bert_eval_command(container["args"])
    assert command == ["run"]
    experiment_path = str(params["experiment_file"])
    mount = next(m for m in container["volumeMounts"] if experiment_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = _one(manifest_objects, "ConfigMap", volume["configMap"]["name"])
    key = experiment_path.removeprefix(mount["mountPath"] + "/")
    experiment_file = tmp_path / key
    experiment_file.write_text(config_map["data"][key])
    experiment = load_experiment(experiment_file)  # the core's own parser and validation
    assert experiment.id == yaml.safe_load(config_map["data"][key])["experiment_id"]

    # Wired to the chart installed as release bert-eval in namespace bert-eval (kind profile).
    rendered = rendered_profiles["examples/kind"]
    worker = rendered.workload("eval-worker")["spec"]["template"]["spec"]
    worker_env = env_of(worker["containers"][0])
    env = env_of(container)
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "BERT_EVAL_RUNS_DIR"):
        assert env[name]["value"] == worker_env[name]["value"], name
    runs_claim = next(v for v in worker["volumes"] if v["name"] == "runs")["persistentVolumeClaim"]["claimName"]
    starter_runs = next(v for v in pod["volumes"] if v.get("persistentVolumeClaim"))
    assert starter_runs["persistentVolumeClaim"]["claimName"] == runs_claim
    starter_mount = next(m for m in container["volumeMounts"] if m["name"] == starter_runs["name"])
    assert starter_mount["mountPath"] == env["BERT_EVAL_RUNS_DIR"]["value"]
    eval_image = rendered.values["images"]["eval"]
    assert container["image"] == f"{eval_image['repository']}:{eval_image['tag']}"


def test_worker_commands_are_real_bert_eval_commands(rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles["defaults"]
    for component, expected in (("training-worker", ["worker", "training"]), ("eval-worker", ["worker", "eval"])):
        (container,) = rendered.workload(component)["spec"]["template"]["spec"]["containers"]
        command, _ = parse_bert_eval_command(container["args"])
        assert command == expected


def test_unknown_commands_do_not_parse() -> None:
    # Guards the parser used above: a wrong command or option must not pass as real.
    with pytest.raises(Exception, match="No such (command|option)"):
        parse_bert_eval_command(["worker", "gpu"])
    with pytest.raises(Exception, match="No such option"):
        parse_bert_eval_command(["run", "x.yaml", "--experiment-id", "y"])


# --------------------------------------------------------------------------- kind, Makefile, images


def test_kind_config_has_a_gpu_pool_worker_and_a_cpu_worker(kind_config: dict[str, Any]) -> None:
    roles = [n["role"] for n in kind_config["nodes"]]
    assert sorted(roles) == ["control-plane", "worker", "worker"]
    pools = sorted(n.get("labels", {}).get("bert-eval/pool", "") for n in kind_config["nodes"] if n["role"] == "worker")
    assert pools == ["cpu", "gpu"]
    for node in kind_config["nodes"]:
        (mount,) = node["extraMounts"]
        assert mount["containerPath"] == "/bert_runs"
        assert not Path(mount["hostPath"]).is_absolute(), "relative to the repository root (make kind-up's cwd)"


MAKE_TARGETS = [
    "kind-up",
    "images",
    "kind-images",
    "kind-load",
    "deploy",
    "experiment",
    "chaos",
    "demo-k8s",
    "ui",
    "kind-down",
    "chart-lint",
]


def test_makefile_kubernetes_section() -> None:
    text = (REPO / "Makefile").read_text()
    assert "# --- Kubernetes ---" in text
    section = text[text.index("# --- Kubernetes ---") :]
    defined = re.findall(r"^([a-z][\w-]*):(?!=)", section, flags=re.MULTILINE)
    assert [t for t in defined if t in MAKE_TARGETS] == MAKE_TARGETS
    for variable in ("CLUSTER ?= bert-eval", "NAMESPACE ?= bert-eval", "IMAGE_TAG ?="):
        assert variable in section
    for chart in ("prometheus-community/kube-prometheus-stack", "kedacore/keda", "$(CHART)"):
        assert "upgrade --install" in section and chart in section
    for manifest in (
        "manifests/namespace.yaml",
        "manifests/starter-job.yaml",
        "manifests/chaos-job.yaml",
        "manifests/chaos-rbac.yaml",
    ):
        assert manifest in section
        assert (REPO / manifest).is_file()
    assert (
        "kind-config.yaml" in section
        and "services/Dockerfile.training" in section
        and "services/Dockerfile.eval" in section
    )


def _stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM\s", dockerfile, flags=re.MULTILINE)[1:]


@pytest.mark.parametrize("name", ["Dockerfile.training", "Dockerfile.eval"])
def test_dockerfiles_are_multi_stage_pinned_and_non_root(name: str) -> None:
    text = (REPO / "services" / name).read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage"
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.MULTILINE))
    for base in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        image = args.get(base.strip("${}"), base)
        assert re.search(r":[\w.-]*\d[\w.-]*$", image) and not image.endswith(":latest"), f"unpinned base {image}"
    assert args["TORCH_VERSION"] == "2.13.0"
    final = stages[-1]
    assert "COPY --from=builder" in final
    assert re.search(r"^USER \$\{UID\}|^USER 10001", final, flags=re.MULTILINE) and args["UID"] == "10001"
    assert 'ENTRYPOINT ["bert-eval"]' in final
    assert not re.search(r"build-essential|gcc|g\+\+|python3-pip|python3-venv|python3-dev", final)
    assert "PIP_NO_CACHE_DIR=1" in text and "pip install ." in text
    if name == "Dockerfile.eval":
        assert args["PYTHON_IMAGE"].startswith("python:3.11") and "slim" in args["PYTHON_IMAGE"]
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    else:
        # PyPI's Linux x86_64 torch 2.13.0 wheel is the CUDA 13.0 build (it requires cuda-toolkit==13.0.3):
        # the CUDA libraries come as wheels, so the base needs no CUDA; the node's driver must be >= 580.
        assert args["PYTHON_IMAGE"].startswith("python:3.11") and "slim" in args["PYTHON_IMAGE"]
        assert args["TORCH_INDEX_URL"] == "https://pypi.org/simple"
        assert "CUDA 13.0" in text and ">= 580" in text


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    }
    assert {".venv", ".git", "bert_runs", "**/__pycache__", ".pytest_cache"} <= patterns
    assert not {"services", "pyproject.toml", "README.md"} & patterns


def test_chart_default_release_names_match_what_manifests_assume(rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles["defaults"]
    assert rendered.get("Service", f"{RELEASE}-temporal")
    assert rendered.get("PersistentVolumeClaim", f"{RELEASE}-runs")
