"""Scale to zero without killing busy work, spot-ready training, and a first install that explains
itself: the chart rendered by the real Helm engine, objects validated against Kubernetes 1.33."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import HelmError
from support.k8s import CHART_SRC, KUBE_VERSION, RELEASE, Rendered, assert_hardened, env_of

from bert_eval.settings import EVAL_TASK_QUEUE, TRAINING_TASK_QUEUE
from bert_eval.temporal.pod_annotations import PodAnnotationSettings


def _profile(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART_SRC / "examples" / f"values-{name}.yaml").read_text())


CLOUD = ("gke", "eks", "gke-spot", "eks-spot")


def _pod(rendered: Rendered, component: str) -> dict[str, Any]:
    workload = rendered.workload(component)
    assert workload is not None, component
    return workload["spec"]["template"]["spec"]


def _env(rendered: Rendered, component: str) -> dict[str, dict[str, Any]]:
    return env_of(_pod(rendered, component)["containers"][0])


def _fails(render, values: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(HelmError) as caught:
        render(values, **kwargs)
    return str(caught.value)


# --------------------------------------------------------------------------- scale to zero on waiting + running


@pytest.mark.parametrize("profile", CLOUD)
def test_cloud_profiles_scale_training_from_zero_on_backlog_plus_running_attempts(profile: str, render) -> None:
    rendered = render(_profile(profile))
    (scaled,) = rendered.component("ScaledObject", "training-worker")
    spec = scaled["spec"]
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    assert spec["scaleTargetRef"]["name"] == rendered.workload("training-worker")["metadata"]["name"]
    assert "replicas" not in rendered.workload("training-worker")["spec"]  # KEDA owns it
    triggers = {t["name"]: t for t in spec["triggers"]}
    prefix = _env(rendered, "training-worker").get("BERT_EVAL_TASK_QUEUE_PREFIX", {}).get("value")
    queue = f"{prefix}-{TRAINING_TASK_QUEUE}" if prefix else TRAINING_TASK_QUEUE
    backlog = triggers["backlog"]
    assert backlog["type"] == "temporal" and backlog["metadata"]["taskQueue"] == queue
    assert set(backlog["metadata"]["queueTypes"].split(",")) == {"workflow", "activity"}
    running = triggers["running"]
    assert running["type"] == "prometheus"
    assert f'kind="training",task_queue="{queue}"' in running["metadata"]["query"]
    assert "bert_eval_worker_attempts_running" in running["metadata"]["query"]
    assert running["metadata"]["query"].endswith("or vector(0)")  # no series yet (pool at zero) reads 0
    modifiers = spec["advanced"]["scalingModifiers"]
    assert modifiers["formula"] == "backlog + running" and modifiers["target"] == "1"
    assert all(isinstance(v, str) for t in spec["triggers"] for v in t["metadata"].values())
    # The eval pool counts its running attempts too, so KEDA never scales a busy evaluation away.
    (eval_scaled,) = rendered.component("ScaledObject", "eval-worker")
    eval_queries = [t["metadata"]["query"] for t in eval_scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    assert (
        eval_queries
        and f'kind="eval",task_queue="{queue.replace(TRAINING_TASK_QUEUE, EVAL_TASK_QUEUE)}"' in eval_queries[0]
    )


def test_defaults_keep_a_fixed_training_pool(render) -> None:
    rendered = render({})
    assert not rendered.component("ScaledObject", "training-worker")
    assert rendered.workload("training-worker")["spec"]["replicas"] == 1


def test_keda_without_prometheus_scales_on_backlog_only(render) -> None:
    values = copy.deepcopy(_profile("gke"))
    values["autoscaling"]["keda"]["prometheus"] = {"enabled": False}
    (scaled,) = render(values).component("ScaledObject", "training-worker")
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["temporal"] and "advanced" not in scaled["spec"]


def test_the_metric_keda_reads_is_the_one_the_workers_export() -> None:
    from bert_eval.temporal import metrics

    gauge = metrics.WORKER.attempts_running
    assert gauge._name == "bert_eval_worker_attempts_running"
    assert gauge._labelnames == ("kind", "task_queue")


# --------------------------------------------------------------------------- busy pods are removed last


def test_workers_patch_only_their_own_pod(render) -> None:
    rendered = render(_profile("gke"))
    (role,) = rendered.by_kind("Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    (binding,) = rendered.by_kind("RoleBinding")
    service_account = _pod(rendered, "training-worker")["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_account, "namespace": "bert-eval"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (policy,) = rendered.by_kind("ValidatingAdmissionPolicy")
    (policy_binding,) = rendered.by_kind("ValidatingAdmissionPolicyBinding")
    assert policy_binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy_binding["spec"]["validationActions"] == ["Deny"]
    (condition,) = policy["spec"]["matchConditions"]
    assert f"system:serviceaccount:bert-eval:{service_account}" in condition["expression"]
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "authentication.kubernetes.io/pod-name" in expressions and "object.metadata.name" in expressions
    assert "object.spec == oldObject.spec" in expressions
    for obj in (role, binding, policy, policy_binding):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(("component", "do_not_disrupt"), [("training-worker", "true"), ("eval-worker", "false")])
def test_worker_pods_know_their_own_name_and_what_to_mark(render, component: str, do_not_disrupt: str) -> None:
    rendered = render(_profile("gke"))
    pod = _pod(rendered, component)
    env = _env(rendered, component)
    assert env["BERT_EVAL_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["BERT_EVAL_POD_NAMESPACE"]["value"] == "bert-eval"
    assert env["BERT_EVAL_POD_DELETION_COST"]["value"] == "true"
    assert env["BERT_EVAL_POD_DO_NOT_DISRUPT"]["value"] == do_not_disrupt
    assert pod["automountServiceAccountToken"] is True  # the worker calls the API for its own pod
    # The variables the worker reads are the ones the chart sets.
    assert {f"BERT_EVAL_POD_{name.upper()}" for name in PodAnnotationSettings.model_fields} <= set(env)


def test_without_busy_pod_protection_no_token_and_no_rbac(render) -> None:
    rendered = render({"busyPodProtection": {"deletionCost": False, "doNotDisrupt": False}})
    assert not rendered.by_kind("Role") and not rendered.by_kind("ValidatingAdmissionPolicy")
    for component in ("training-worker", "eval-worker"):
        assert _pod(rendered, component)["automountServiceAccountToken"] is False
        assert "BERT_EVAL_POD_NAME" not in _env(rendered, component)
    starter = render({"starter": {"enabled": True}})
    assert starter.workload("starter")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- spot-ready training


GKE_SPOT_GRACE_S = 15  # 30 s of preemption notice, of which graceful node shutdown leaves regular pods 15 s
EC2_SPOT_NOTICE_S = 120


@pytest.mark.parametrize(
    ("profile", "spot_label", "notice_s"),
    [
        ("gke-spot", ("cloud.google.com/gke-spot", "true"), GKE_SPOT_GRACE_S),
        ("eks-spot", ("karpenter.sh/capacity-type", "spot"), EC2_SPOT_NOTICE_S),
    ],
)
def test_spot_profiles_put_only_training_on_spot_with_a_grace_that_fits_the_notice(
    profile: str, spot_label: tuple[str, str], notice_s: int, render
) -> None:
    values = _profile(profile)
    rendered = render(values)
    training = _pod(rendered, "training-worker")
    key, value = spot_label
    assert training["nodeSelector"][key] == value
    grace = training["terminationGracePeriodSeconds"]
    assert grace <= notice_s
    shutdown_s = float(_env(rendered, "training-worker")["BERT_EVAL_GRACEFUL_SHUTDOWN_S"]["value"])
    assert 0 < shutdown_s < grace  # the final checkpoint's wait ends before SIGKILL
    # Temporal and the eval pool stay on on-demand nodes.
    others = [_pod(rendered, "eval-worker")]
    if rendered.component("Deployment", "temporal"):
        others.append(rendered.component("Deployment", "temporal")[0]["spec"]["template"]["spec"])
    for pod in others:
        assert pod.get("nodeSelector", {}).get(key) != value
        tolerated = {t.get("key") for t in pod.get("tolerations", [])}
        if key == "cloud.google.com/gke-spot":
            (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"
            ]
            assert {"key": key, "operator": "DoesNotExist"} in term["matchExpressions"]
            assert key not in tolerated
        else:
            assert pod["nodeSelector"][key] == "on-demand"
    # Periodic checkpoints bound the loss when the final one does not fit the grace.
    for run in values["starter"]["experiment"]["runs"]:
        assert 0 < run["train"]["checkpoint_every_seconds"] <= 300
    assert rendered.component("ScaledObject", "training-worker")[0]["spec"]["minReplicaCount"] == 0


# --------------------------------------------------------------------------- a first install that explains itself


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"autoscaling": {"mode": "keda"}}, ("KEDA", "helm install keda", "autoscaling.mode=hpa")),
        ({"training": {"autoscaling": {"mode": "keda"}}}, ("KEDA", "training.autoscaling.mode=none")),
        ({"monitoring": {"enabled": True}}, ("kube-prometheus-stack", "monitoring.enabled=false")),
    ],
)
def test_missing_operators_fail_the_install_with_one_line_naming_the_fix(
    values: dict[str, Any], names: tuple[str, ...], render
) -> None:
    message = _fails(render, values, cluster_crds=False)
    assert "\n" not in message.strip()
    for name in names:
        assert name in message
    # With the APIs served (or named with --api-versions / assumeApiVersions), the same values install.
    assert render(values).objects


def test_helm_test_hooks_check_temporal_the_volume_and_the_gpu(render) -> None:
    rendered = render(_profile("gke"))
    pods = {p["metadata"]["name"]: p for p in rendered.by_kind("Pod")}
    connection, gpu = pods[f"{RELEASE}-test-connection"], pods[f"{RELEASE}-test-gpu"]
    for pod in (connection, gpu):
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert_hardened(pod["metadata"]["name"], pod["spec"])
        kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    script = connection["spec"]["containers"][0]["args"][0]
    assert "ensure_search_attributes" in script and "BERT_EVAL_RUNS_DIR" in script and "connect()" in script
    compile(script, "helm-test", "exec")  # the check is valid Python
    # As the workers: same uid, same volume, same Temporal settings, and the workers' NetworkPolicy.
    assert (
        connection["spec"]["securityContext"]["runAsUser"]
        == _pod(rendered, "eval-worker")["securityContext"]["runAsUser"]
    )
    worker_env = _env(rendered, "eval-worker")
    test_env = env_of(connection["spec"]["containers"][0])
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "BERT_EVAL_RUNS_DIR"):
        assert test_env[name] == worker_env[name]
    assert connection["metadata"]["labels"]["bert-eval/temporal-client"] == "true"
    # The GPU check is scheduled like the training pod and asks for one GPU.
    training = _pod(rendered, "training-worker")
    assert gpu["spec"]["nodeSelector"] == training["nodeSelector"]
    assert gpu["spec"]["tolerations"] == training["tolerations"]
    assert gpu["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "torch.cuda.is_available()" in gpu["spec"]["containers"][0]["args"][0]
    assert f"{RELEASE}-test-gpu" not in {
        p["metadata"]["name"] for p in render({"gpu": {"enabled": False}}).by_kind("Pod")
    }


def test_hugging_face_cache_on_the_runs_volume_and_token_from_a_secret(render) -> None:
    default = _env(render({}), "training-worker")
    assert default["HF_HOME"]["value"] == "/cache/huggingface" and "HF_TOKEN" not in default
    rendered = render({"huggingFace": {"cacheOnRunsVolume": True, "token": {"existingSecret": "hf-token"}}})
    for component in ("training-worker", "eval-worker"):
        env = _env(rendered, component)
        assert env["HF_HOME"]["value"] == "/bert_runs/hf-home"
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
        assert_hardened(component, _pod(rendered, component))


# --------------------------------------------------------------------------- the review's remaining defects


def test_task_queue_prefix_defaults_to_the_release_name_outside_dev_mode(render) -> None:
    external = {"temporal": {"mode": "external", "address": "temporal.example.internal:7233"}}
    rendered = render(external, name="team-a")
    assert _env(rendered, "eval-worker")["BERT_EVAL_TASK_QUEUE_PREFIX"]["value"] == "team-a"
    assert "team-a-bert-eval-task-queue" in rendered.notes
    explicit = render({**external, "taskQueuePrefix": "shared"}, name="team-a")
    assert _env(explicit, "eval-worker")["BERT_EVAL_TASK_QUEUE_PREFIX"]["value"] == "shared"
    assert "BERT_EVAL_TASK_QUEUE_PREFIX" not in _env(render({}, name="team-a"), "eval-worker")  # dev: its own server
    long_name = "r" * 45
    assert "set taskQueuePrefix" in _fails(render, external, name=long_name)


def test_upgrade_advice_resets_then_reuses_values(render) -> None:
    notes = render({"temporal": {"mode": "external", "address": "t.example:7233"}}).notes
    assert "--reset-then-reuse-values" in notes and "--reuse-values " not in notes
    readme = (CHART_SRC / "README.md").read_text()
    assert " --reuse-values" not in readme


@pytest.mark.parametrize(
    ("values", "component", "void"),
    [
        ({}, "eval-worker", True),
        ({}, "training-worker", False),
        ({"gpu": {"enabled": False}}, "training-worker", True),
        ({"starter": {"enabled": True}}, "starter", True),
    ],
)
def test_pods_without_a_gpu_request_see_no_gpu(render, values: dict[str, Any], component: str, void: bool) -> None:
    env = _env(render(values), component)
    assert (env.get("NVIDIA_VISIBLE_DEVICES", {}).get("value") == "void") is void


def test_network_policy_opens_cloud_credential_endpoints_and_shared_dev_server_clients(render) -> None:
    closed = render({})
    workers = next(o for o in closed.by_kind("NetworkPolicy") if o["metadata"]["name"].endswith("-workers"))
    cidrs = {b["ipBlock"]["cidr"] for rule in workers["spec"]["egress"] for b in rule.get("to", []) if "ipBlock" in b}
    assert not cidrs & {"169.254.169.254/32", "169.254.170.23/32"}
    rendered = render(
        {
            "networkPolicy": {
                "cloudMetadata": {"gkeWorkloadIdentity": True, "eksPodIdentity": True},
                "temporalClientNamespaces": ["notebooks"],
            }
        }
    )
    workers = next(o for o in rendered.by_kind("NetworkPolicy") if o["metadata"]["name"].endswith("-workers"))
    allowed = {
        (b["ipBlock"]["cidr"], p["port"])
        for rule in workers["spec"]["egress"]
        for b in rule.get("to", [])
        if "ipBlock" in b
        for p in rule["ports"]
    }
    assert {("169.254.169.254/32", 80), ("169.254.169.252/32", 988), ("169.254.170.23/32", 80)} <= allowed
    temporal = rendered.get("NetworkPolicy", f"{RELEASE}-temporal")
    peers = temporal["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "notebooks"}}} in peers
    for policy in rendered.by_kind("NetworkPolicy"):
        kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)


def test_results_volume_survives_argo_cd_and_helm(render) -> None:
    (claim,) = render({}).component("PersistentVolumeClaim", "runs-storage")
    annotations = claim["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/sync-options"] == "Delete=false,Prune=false"
    assert annotations["helm.sh/resource-policy"] == "keep"


def test_kind_uninstall_frees_the_static_volume_for_a_reinstall(render) -> None:
    (volume,) = render(_profile("kind")).by_kind("PersistentVolume")
    readme = (CHART_SRC / "README.md").read_text()
    uninstall = readme.split("## Uninstall", 1)[1].split("\n## ", 1)[0]
    # A Released PV keeps the old claim's uid and never binds the reinstalled claim.
    assert f"kubectl delete pv {volume['metadata']['name']}" in uninstall


def test_kind_nodes_run_a_pinned_node_image(kind_config: dict[str, Any]) -> None:
    images = {node.get("image") for node in kind_config["nodes"]}
    (image,) = images
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image


def test_readme_release_commands_name_the_images_the_profile_installs() -> None:
    import shlex

    from support.k8s import REPO

    section = (CHART_SRC / "README.md").read_text().split("## From a registry", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    (release,) = [c for c in commands if c[:2] == ["make", "release"]]
    options = dict(arg.split("=", 1) for arg in release[2:])
    (install,) = [c for c in commands if c[:2] == ["helm", "install"]]
    assert install[3] == f"oci://{options['REGISTRY']}/bert-eval"
    assert install[install.index("--version") + 1] == options["VERSION"]
    profile = yaml.safe_load((REPO / install[install.index("-f") + 1]).read_text())
    for name in ("training", "eval"):
        image = profile["images"][name]
        assert (image["repository"], image["tag"]) == (f"{options['REGISTRY']}/bert-eval-{name}", options["VERSION"])
    # What the packaged chart's defaults become (scripts/release_chart.py), from this repository's values.yaml.
    import importlib.util

    spec = importlib.util.spec_from_file_location("release_chart", REPO / "scripts" / "release_chart.py")
    assert spec is not None and spec.loader is not None
    release_chart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release_chart)
    pinned = yaml.safe_load(release_chart.pin_images((CHART_SRC / "values.yaml").read_text(), options["REGISTRY"]))
    assert pinned["images"]["training"]["repository"] == f"{options['REGISTRY']}/bert-eval-training"
    assert pinned["images"]["eval"]["repository"] == f"{options['REGISTRY']}/bert-eval-eval"
