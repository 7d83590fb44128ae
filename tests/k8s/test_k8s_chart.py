"""The bert-eval chart, rendered by the real Helm engine for every value profile and checked
against the Kubernetes 1.33 schemas and the invariants the deployment relies on."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.k8s import (
    CHART_SRC,
    CRD_API_VERSIONS,
    CRD_KINDS,
    KUBE_VERSION,
    NAMESPACE,
    PROFILES,
    RELEASE,
    Rendered,
    all_containers,
    assert_hardened,
    env_of,
    labels_match,
    parse_bert_eval_command,
    pod_templates,
)

profile_names = pytest.mark.parametrize("profile", list(PROFILES))
# Pods the chart runs that are not bert-eval processes (no Temporal client, no bert-eval env).
NOT_BERT_EVAL_PROCESSES = {"temporal", "otel-collector", "jaeger"}
STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
)


def validate_k8s(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


# --------------------------------------------------------------------------- schemas


@profile_names
def test_every_object_is_valid_for_kubernetes_1_33(profile: str, rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles[profile]
    assert rendered.objects, f"{profile} rendered nothing"
    for obj in rendered.objects:
        if obj["kind"] in CRD_KINDS:
            continue  # checked field by field below, against what the operators require
        try:
            validate_k8s(obj)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{profile}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
        for label in STANDARD_LABELS:
            assert label in obj["metadata"].get("labels", {}), f"{obj['kind']}/{obj['metadata']['name']} lacks {label}"


def test_rendered_object_count(rendered_profiles: dict[str, Rendered]) -> None:
    # A profile that silently renders a fraction of the chart would pass the schema test.
    counts = {name: len(r.objects) for name, r in rendered_profiles.items()}
    assert all(count >= 7 for count in counts.values()), counts
    print(f"\nvalidated {sum(counts.values())} rendered objects: {counts}")


def test_strict_validation_rejects_unknown_fields(rendered_profiles: dict[str, Rendered]) -> None:
    deployment = json.loads(json.dumps(rendered_profiles["defaults"].by_kind("Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["runAsNonRoot"] = True  # belongs in securityContext
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(deployment)


@profile_names
def test_profile_values_pass_the_chart_schema(profile: str, helm_chart: Any) -> None:
    helm_chart.validate_schema(PROFILES[profile])


# --------------------------------------------------------------------------- shared volume


def _runs_mount(workload: dict[str, Any], container_name: str) -> tuple[str, str]:
    pod = workload["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == container_name)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "runs")
    volume = next(v for v in pod["volumes"] if v["name"] == "runs")
    assert env_of(container)["BERT_EVAL_RUNS_DIR"]["value"] == mount["mountPath"]
    assert not mount.get("readOnly"), f"{container_name} must be able to write {mount['mountPath']}"
    return volume["persistentVolumeClaim"]["claimName"], mount["mountPath"]


@profile_names
def test_workers_and_starter_share_one_runs_claim_at_one_path(
    profile: str, rendered_profiles: dict[str, Rendered]
) -> None:
    rendered = rendered_profiles[profile]
    mounts = {"training": _runs_mount(rendered.workload("training-worker"), "training-worker")}
    mounts["eval"] = _runs_mount(rendered.workload("eval-worker"), "eval-worker")
    if starter := rendered.workload("starter"):
        mounts["starter"] = _runs_mount(starter, "starter")
    assert len(set(mounts.values())) == 1, mounts
    claim, _ = mounts["eval"]
    existing = rendered.values.get("persistence", {}).get("existingClaim")
    if existing:
        assert claim == existing
        assert not rendered.by_kind("PersistentVolumeClaim") or all(
            p["metadata"]["name"] != claim for p in rendered.by_kind("PersistentVolumeClaim")
        )
    else:
        pvc = rendered.get("PersistentVolumeClaim", claim)
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kind_runs_claim_binds_to_the_directory_kind_mounts_on_every_node(
    rendered_profiles: dict[str, Rendered], kind_config: dict[str, Any]
) -> None:
    rendered = rendered_profiles["examples/kind"]
    (pv,) = rendered.by_kind("PersistentVolume")
    claim_name = rendered.workload("training-worker")["spec"]["template"]["spec"]["volumes"][0][
        "persistentVolumeClaim"
    ]["claimName"]
    pvc = rendered.get("PersistentVolumeClaim", claim_name)
    assert pv["spec"]["claimRef"] == {"namespace": NAMESPACE, "name": claim_name}
    assert pv["spec"]["storageClassName"] == pvc["spec"]["storageClassName"]
    assert "ReadWriteMany" in pv["spec"]["accessModes"]
    for node in kind_config["nodes"]:
        node_paths = {m["containerPath"]: m["hostPath"] for m in node.get("extraMounts", [])}
        assert pv["spec"]["hostPath"]["path"] in node_paths, f"{node['role']} node does not mount the runs directory"
    assert len({m["hostPath"] for n in kind_config["nodes"] for m in n["extraMounts"]}) == 1


# --------------------------------------------------------------------------- GPU placement


@profile_names
def test_gpu_requests_and_tolerations_only_on_training(profile: str, rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles[profile]
    values = rendered.values
    gpu_resource = values.get("gpu", {}).get("resourceName", "nvidia.com/gpu")
    for owner, template in rendered.pod_templates():
        spec = template["spec"]
        is_training = template["metadata"]["labels"].get("app.kubernetes.io/component") == "training-worker"
        gpu_tolerations = [t for t in spec.get("tolerations", []) if t.get("key") == "nvidia.com/gpu"]
        for container in all_containers(spec):
            resources = container.get("resources", {})
            requested = {**resources.get("requests", {}), **resources.get("limits", {})}
            if not is_training:
                assert gpu_resource not in requested, f"{owner['metadata']['name']} asks for GPUs"
        if not is_training:
            assert not gpu_tolerations, f"{owner['metadata']['name']} tolerates the GPU pool's taint"
            continue
        limits = spec["containers"][0]["resources"].get("limits", {})
        env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
        if values.get("gpu", {}).get("enabled", True):
            assert limits[gpu_resource] == values.get("gpu", {}).get("count", 1) >= 1
            # Scheduled for a GPU: a pod that finds none must fail fast, not train on CPU.
            assert env.get("BERT_EVAL_REQUIRE_GPU") == "true"
        else:
            assert gpu_resource not in limits
            assert "BERT_EVAL_REQUIRE_GPU" not in env
        expected_tolerations = values.get("training", {}).get("tolerations", [{"key": "nvidia.com/gpu"}])
        assert len(gpu_tolerations) == len([t for t in expected_tolerations if t.get("key") == "nvidia.com/gpu"])


def test_kind_training_lands_on_the_tainted_gpu_pool_node_without_gpus(
    rendered_profiles: dict[str, Rendered], kind_config: dict[str, Any]
) -> None:
    rendered = rendered_profiles["examples/kind"]
    training = rendered.workload("training-worker")["spec"]["template"]["spec"]
    eval_spec = rendered.workload("eval-worker")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in training["containers"][0]["resources"].get("limits", {})

    def taints(node: dict[str, Any]) -> list[dict[str, Any]]:
        for patch in node.get("kubeadmConfigPatches", []):
            return yaml.safe_load(patch)["nodeRegistration"].get("taints", [])
        return []

    def schedulable(spec: dict[str, Any], node: dict[str, Any]) -> bool:
        if not labels_match(spec.get("nodeSelector", {}), node.get("labels", {})):
            return False
        tolerated = {(t["key"], t.get("effect")) for t in spec.get("tolerations", [])}
        return all((t["key"], t["effect"]) in tolerated for t in taints(node))

    workers = [n for n in kind_config["nodes"] if n["role"] == "worker"]
    gpu_nodes = [n for n in workers if taints(n)]
    assert len(gpu_nodes) == 1 and gpu_nodes[0]["labels"]
    assert taints(gpu_nodes[0]) == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert [n for n in workers if schedulable(training, n)] == gpu_nodes
    assert [n for n in workers if schedulable(eval_spec, n)] and not schedulable(eval_spec, gpu_nodes[0])
    temporal = rendered.workload("temporal")["spec"]["template"]["spec"]
    assert not schedulable(temporal, gpu_nodes[0])


def test_kind_port_mappings_match_the_nodeports(
    rendered_profiles: dict[str, Rendered], kind_config: dict[str, Any]
) -> None:
    (control_plane,) = [n for n in kind_config["nodes"] if n["role"] == "control-plane"]
    mapped = {m["containerPort"]: m["hostPort"] for m in control_plane["extraPortMappings"]}
    service = rendered_profiles["examples/kind"].get("Service", f"{RELEASE}-temporal")
    ui = next(p for p in service["spec"]["ports"] if p["name"] == "ui")
    assert service["spec"]["type"] == "NodePort" and mapped[ui["nodePort"]] == 8233
    kps = yaml.safe_load((CHART_SRC / "examples" / "kube-prometheus-stack-kind.yaml").read_text())
    assert mapped[kps["grafana"]["service"]["nodePort"]] == 3000


# --------------------------------------------------------------------------- hardening


@profile_names
def test_every_container_is_hardened(profile: str, rendered_profiles: dict[str, Rendered]) -> None:
    for owner, template in rendered_profiles[profile].pod_templates():
        assert_hardened(f"{profile}:{owner['kind']}/{owner['metadata']['name']}", template["spec"])


@profile_names
def test_worker_probes_target_the_health_endpoints_on_the_metrics_port(
    profile: str, rendered_profiles: dict[str, Rendered]
) -> None:
    rendered = rendered_profiles[profile]
    port = rendered.values.get("metrics", {}).get("port", 9464)
    for component in ("training-worker", "eval-worker"):
        (container,) = rendered.workload(component)["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == port == int(env_of(container)["BERT_EVAL_METRICS_PORT"]["value"])
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["startupProbe"]["httpGet"]["port"] == "metrics"
        assert container["args"] == ["worker", component.removesuffix("-worker")]


def test_training_gets_time_for_a_final_checkpoint_and_a_disruption_budget(
    rendered_profiles: dict[str, Rendered],
) -> None:
    rendered = rendered_profiles["defaults"]
    training = rendered.workload("training-worker")
    assert training["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
    (pdb,) = rendered.component("PodDisruptionBudget", "training-worker")
    assert labels_match(pdb["spec"]["selector"]["matchLabels"], training["spec"]["template"]["metadata"]["labels"])
    assert not labels_match(
        pdb["spec"]["selector"]["matchLabels"],
        rendered.workload("eval-worker")["spec"]["template"]["metadata"]["labels"],
    )
    assert pdb["spec"]["maxUnavailable"] == 1
    (min_available,) = rendered_profiles["ci/none"].component("PodDisruptionBudget", "training-worker")
    assert min_available["spec"] == {"minAvailable": 1, "selector": pdb["spec"]["selector"]}
    # Drains take eval workers one at a time too.
    (eval_pdb,) = rendered.component("PodDisruptionBudget", "eval-worker")
    assert eval_pdb["spec"]["maxUnavailable"] == 1
    eval_labels = rendered.workload("eval-worker")["spec"]["template"]["metadata"]["labels"]
    assert labels_match(eval_pdb["spec"]["selector"]["matchLabels"], eval_labels)
    assert not labels_match(
        eval_pdb["spec"]["selector"]["matchLabels"], training["spec"]["template"]["metadata"]["labels"]
    )


# --------------------------------------------------------------------------- Temporal


def test_dev_temporal_server(rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles["defaults"]
    deployment = rendered.get("Deployment", f"{RELEASE}-temporal")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert re.fullmatch(r"temporalio/temporal:\d+\.\d+\.\d+", container["image"]), "pin the dev server image"
    args = container["args"]
    assert args[:2] == ["server", "start-dev"]
    assert args[args.index("--ip") + 1] == "0.0.0.0"
    attributes = {args[i + 1] for i, arg in enumerate(args) if arg == "--search-attribute"}
    assert "BertRunId=Keyword" in attributes
    from temporalio.api.enums.v1 import IndexedValueType

    from bert_eval.temporal.client import SEARCH_ATTRIBUTES  # what the core registers when it can

    def cli_type(value: int) -> str:  # INDEXED_VALUE_TYPE_KEYWORD_LIST -> KeywordList
        return IndexedValueType.Name(value).removeprefix("INDEXED_VALUE_TYPE_").title().replace("_", "")

    assert {f"{name}={cli_type(kind)}" for name, kind in SEARCH_ATTRIBUTES.items()} <= attributes
    db_file = args[args.index("--db-filename") + 1]
    data_mount = next(m for m in container["volumeMounts"] if db_file.startswith(m["mountPath"] + "/"))
    data_volume = next(v for v in pod["volumes"] if v["name"] == data_mount["name"])
    pvc = rendered.get("PersistentVolumeClaim", data_volume["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    service = rendered.get("Service", f"{RELEASE}-temporal")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 7233, "ui": 8233}
    assert labels_match(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    for component in ("training-worker", "eval-worker"):
        env = env_of(rendered.workload(component)["spec"]["template"]["spec"]["containers"][0])
        assert env["TEMPORAL_ADDRESS"]["value"] == f"{RELEASE}-temporal.{NAMESPACE}.svc:7233"


@pytest.mark.parametrize(
    ("profile", "address"),
    [
        ("temporal-external-plain", "temporal.example.internal:7233"),
        ("ci/external-tls", "temporal.example.internal:7233"),
        ("temporal-chart", "temporal-frontend.temporal.svc:7233"),
    ],
)
def test_non_dev_modes_render_no_dev_server_and_point_workers_at_temporal(
    profile: str, address: str, rendered_profiles: dict[str, Rendered]
) -> None:
    rendered = rendered_profiles[profile]
    assert not rendered.component("Deployment", "temporal")
    for component in ("training-worker", "eval-worker"):
        env = env_of(rendered.workload(component)["spec"]["template"]["spec"]["containers"][0])
        assert env["TEMPORAL_ADDRESS"]["value"] == address


def test_temporal_credentials_come_from_secrets(rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles["ci/external-tls"]
    tls_secret = rendered.values["temporal"]["tls"]["existingSecret"]
    for component in ("training-worker", "eval-worker"):
        pod = rendered.workload(component)["spec"]["template"]["spec"]
        env = env_of(pod["containers"][0])
        assert env["TEMPORAL_TLS"]["value"] == "true"
        assert env["TEMPORAL_API_KEY"] == {
            "name": "TEMPORAL_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "temporal-api-key", "key": "api-key"}},
        }
        tls_volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == tls_secret)
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == tls_volume["name"])
        assert mount["readOnly"] is True
        for name in ("TEMPORAL_TLS_CA_FILE", "TEMPORAL_TLS_CERT_FILE", "TEMPORAL_TLS_KEY_FILE"):
            assert env[name]["value"].startswith(mount["mountPath"] + "/")


def expected_otlp_endpoint(rendered: Rendered) -> str | None:
    """otel.endpoint, else the in-chart collector when tracing is on, else none."""
    if endpoint := rendered.values.get("otel", {}).get("endpoint"):
        return endpoint
    if rendered.values.get("tracing", {}).get("enabled"):
        return f"http://{RELEASE}-otel-collector.{NAMESPACE}.svc:4317"
    return None


@profile_names
def test_every_bert_eval_pod_gets_the_process_contract_env(
    profile: str, rendered_profiles: dict[str, Rendered]
) -> None:
    rendered = rendered_profiles[profile]
    otel = expected_otlp_endpoint(rendered)
    for owner, template in rendered.pod_templates():
        if template["metadata"]["labels"].get("app.kubernetes.io/component") in NOT_BERT_EVAL_PROCESSES:
            continue
        for container in template["spec"]["containers"]:
            names = [e["name"] for e in container.get("env", [])]
            assert len(names) == len(set(names)), f"{owner['metadata']['name']}: duplicate env {names}"
            env = env_of(container)
            for name in (
                "TEMPORAL_ADDRESS",
                "TEMPORAL_NAMESPACE",
                "TEMPORAL_TLS",
                "BERT_EVAL_RUNS_DIR",
                "OTEL_SERVICE_NAME",
            ):
                assert name in env, f"{owner['metadata']['name']}: {name}"
            assert env["BERT_EVAL_LOG_FORMAT"]["value"] == "json"
            if "TEMPORAL_API_KEY" in env:
                assert "value" not in env["TEMPORAL_API_KEY"], "API keys come from a Secret, never from values"
                assert env["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"]
            if otel:
                assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == otel
            else:
                assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    # One fine-tune per training worker process (Settings refuses more): no knob to set.
    training_env = env_of(rendered.workload("training-worker")["spec"]["template"]["spec"]["containers"][0])
    assert "BERT_EVAL_TRAINING_CONCURRENCY" not in training_env


# --------------------------------------------------------------------------- autoscaling


def _eval_deployment_name(rendered: Rendered) -> str:
    return rendered.workload("eval-worker")["metadata"]["name"]


@profile_names
def test_eval_autoscaling_mode(profile: str, rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles[profile]
    mode = rendered.values.get("autoscaling", {}).get("mode", "hpa")
    scaled, hpas = rendered.component("ScaledObject", "eval-worker"), rendered.by_kind("HorizontalPodAutoscaler")
    deployment = rendered.workload("eval-worker")
    if mode == "keda":
        assert len(scaled) == 1 and not hpas  # KEDA owns an HPA of its own; two would fight
        check_scaled_object(rendered, scaled[0])
        assert "replicas" not in deployment["spec"]
    elif mode == "hpa":
        assert len(hpas) == 1 and not scaled
        (hpa,) = hpas
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        assert "replicas" not in deployment["spec"]
    else:
        assert not scaled and not hpas
        assert deployment["spec"]["replicas"] == rendered.values.get("eval", {}).get("replicas", 1)


def check_scaled_object(rendered: Rendered, scaled: dict[str, Any]) -> None:
    """What KEDA (>= 2.17, temporal scaler) requires of the ScaledObject."""
    from bert_eval.settings import EVAL_TASK_QUEUE

    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == _eval_deployment_name(rendered)
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["minReplicaCount"] >= 1  # the eval queue also runs the CoordinatorWorkflow
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert len(triggers) == len(spec["triggers"])
    trigger = triggers["temporal"]
    metadata = trigger["metadata"]
    for each in spec["triggers"]:
        assert all(isinstance(v, str) for v in each["metadata"].values()), "KEDA trigger metadata is map[string]string"
    prefix = env_of(rendered.workload("eval-worker")["spec"]["template"]["spec"]["containers"][0]).get(
        "BERT_EVAL_TASK_QUEUE_PREFIX"
    )
    assert metadata["taskQueue"] == (f"{prefix['value']}-" if prefix else "") + EVAL_TASK_QUEUE
    assert "activity" in metadata["queueTypes"].split(",")
    assert int(metadata["targetQueueSize"]) >= 1 and int(metadata["activationTargetQueueSize"]) >= 0
    worker_env = env_of(rendered.workload("eval-worker")["spec"]["template"]["spec"]["containers"][0])
    assert metadata["endpoint"] == worker_env["TEMPORAL_ADDRESS"]["value"]
    assert re.fullmatch(r"[^:/\s]+:\d+", metadata["endpoint"])
    assert metadata["namespace"] == worker_env["TEMPORAL_NAMESPACE"]["value"]
    auths = rendered.by_kind("TriggerAuthentication")
    if "authenticationRef" in trigger:
        (auth,) = auths
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        params = {p["parameter"] for p in auth["spec"]["secretTargetRef"]}
        assert params <= {"apiKey", "ca", "cert", "key"} and params
        assert all(p["name"] and p["key"] for p in auth["spec"]["secretTargetRef"])
    else:
        assert not auths


def test_keda_authenticates_like_the_workers(rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles["ci/external-tls"]
    (auth,) = rendered.by_kind("TriggerAuthentication")
    refs = {p["parameter"]: (p["name"], p["key"]) for p in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "apiKey": ("temporal-api-key", "api-key"),
        "ca": ("temporal-client-tls", "ca.crt"),
        "cert": ("temporal-client-tls", "tls.crt"),
        "key": ("temporal-client-tls", "tls.key"),
    }
    (scaled,) = rendered.component("ScaledObject", "eval-worker")
    assert scaled["spec"]["triggers"][0]["metadata"]["tlsServerName"] == "temporal.example.internal"


# --------------------------------------------------------------------------- monitoring


def _monitoring_enabled(rendered: Rendered) -> bool:
    return bool(rendered.values.get("monitoring", {}).get("enabled"))


@profile_names
def test_scrape_object_selects_the_worker_pods_and_a_real_port(
    profile: str, rendered_profiles: dict[str, Rendered]
) -> None:
    rendered = rendered_profiles[profile]
    monitors = rendered.by_kind("ServiceMonitor") + rendered.by_kind("PodMonitor")
    if not _monitoring_enabled(rendered):
        assert not monitors
        return
    (monitor,) = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    expected_labels = rendered.values["monitoring"].get("labels", {"release": "kube-prometheus-stack"})
    assert labels_match(expected_labels, monitor["metadata"]["labels"])
    spec = monitor["spec"]
    assert NAMESPACE in spec["namespaceSelector"]["matchNames"]
    selector = spec["selector"]["matchLabels"]
    assert selector, "an empty selector would scrape everything"
    workers = [rendered.workload(c) for c in ("training-worker", "eval-worker")]
    if monitor["kind"] == "ServiceMonitor":
        services = [s for s in rendered.by_kind("Service") if labels_match(selector, s["metadata"]["labels"])]
        assert len(services) == 1, services
        (service,) = services
        endpoint_ports = [e["port"] for e in spec["endpoints"]]
        service_ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert endpoint_ports and set(endpoint_ports) <= set(service_ports)
        for worker in workers:
            template = worker["spec"]["template"]
            assert labels_match(service["spec"]["selector"], template["metadata"]["labels"]), worker["metadata"]["name"]
            container_ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
            assert all(service_ports[p]["targetPort"] in container_ports for p in endpoint_ports)
        temporal = rendered.component("Deployment", "temporal")
        assert not any(
            labels_match(service["spec"]["selector"], t["spec"]["template"]["metadata"]["labels"]) for t in temporal
        )
    else:
        endpoint_ports = [e["port"] for e in spec["podMetricsEndpoints"]]
        assert endpoint_ports
        for worker in workers:
            template = worker["spec"]["template"]
            assert labels_match(selector, template["metadata"]["labels"]), worker["metadata"]["name"]
            container_ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
            assert set(endpoint_ports) <= container_ports
    for endpoint in spec.get("endpoints", []) + spec.get("podMetricsEndpoints", []):
        assert endpoint["path"] == "/metrics"


@profile_names
def test_dashboard_configmaps(profile: str, rendered_profiles: dict[str, Rendered], chart_dir) -> None:
    rendered = rendered_profiles[profile]
    dashboards = rendered.component("ConfigMap", "dashboards")
    on = _monitoring_enabled(rendered) and rendered.values["monitoring"].get("dashboards", {}).get("enabled", True)
    files = sorted((chart_dir / "dashboards").glob("*.json"))
    assert files
    if not on:
        assert not dashboards
        return
    assert len(dashboards) == len(files)
    seen = set()
    for config_map in dashboards:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        (payload,) = config_map["data"].values()
        model = json.loads(payload)
        assert isinstance(model, dict) and model.get("title"), "a Grafana dashboard model has a title"
        assert (
            "__BERT_EVAL_" not in payload
        )  # the template replaced every __BERT_EVAL_*__ token with this release's value
        seen.add(model.get("uid"))
    # One per file, each a UID of this release (file name + hash of namespace/release, <= 40 characters).
    assert {uid.rsplit("-", 1)[0] for uid in seen} == {f.stem for f in files}
    assert all(len(uid) <= 40 for uid in seen)


def test_repo_dashboards_are_grafana_models() -> None:
    for path in sorted((CHART_SRC / "dashboards").glob("*.json")):
        model = json.loads(path.read_text())
        assert isinstance(model, dict) and "panels" in model and model.get("title"), path.name


# --------------------------------------------------------------------------- network policy


def test_dev_temporal_accepts_grpc_from_every_bert_eval_client(
    rendered_profiles: dict[str, Rendered], manifest_objects: dict[str, list[dict[str, Any]]]
) -> None:
    for profile in ("defaults", "examples/kind", "ci/podmonitor-starter"):
        rendered = rendered_profiles[profile]
        temporal = rendered.workload("temporal")["spec"]["template"]
        policy = next(
            p
            for p in rendered.by_kind("NetworkPolicy")
            if labels_match(p["spec"]["podSelector"]["matchLabels"], temporal["metadata"]["labels"])
        )
        grpc_rules = [
            r for r in policy["spec"]["ingress"] if any(port["port"] in ("grpc", 7233) for port in r.get("ports", []))
        ]
        (rule,) = grpc_rules
        named = {p["name"]: p["containerPort"] for p in temporal["spec"]["containers"][0]["ports"]}
        assert named["grpc"] == 7233
        pod_peers = [peer["podSelector"]["matchLabels"] for peer in rule["from"] if "podSelector" in peer]
        clients = [
            t
            for _, t in rendered.pod_templates()
            if t["metadata"]["labels"]["app.kubernetes.io/component"] not in NOT_BERT_EVAL_PROCESSES
        ]
        clients += [t for docs in manifest_objects.values() for _, t in pod_templates(docs)]
        assert clients
        for template in clients:
            assert any(labels_match(peer, template["metadata"]["labels"]) for peer in pod_peers), template["metadata"]
        keda_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
        assert (keda_peer in rule["from"]) == (rendered.values.get("autoscaling", {}).get("mode") == "keda")


@profile_names
def test_worker_network_policy(profile: str, rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles[profile]
    policies = rendered.by_kind("NetworkPolicy")
    if not rendered.values.get("networkPolicy", {}).get("enabled", True):
        assert not policies
        return
    worker_templates = [rendered.workload(c)["spec"]["template"] for c in ("training-worker", "eval-worker")]
    (policy,) = [
        p
        for p in policies
        if all(labels_match(p["spec"]["podSelector"]["matchLabels"], t["metadata"]["labels"]) for t in worker_templates)
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == ["metrics"]
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])}
    assert 53 in egress_ports
    address = env_of(worker_templates[0]["spec"]["containers"][0])["TEMPORAL_ADDRESS"]["value"]
    assert int(address.rsplit(":", 1)[1]) in egress_ports
    if endpoint := expected_otlp_endpoint(rendered):
        assert int(re.search(r":(\d+)", endpoint.split("//")[-1]).group(1)) in egress_ports


# --------------------------------------------------------------------------- starter Job and NOTES


def test_chart_starter_job_submits_the_experiment_configmap(rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles["ci/podmonitor-starter"]
    job = rendered.workload("starter")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command, params = parse_bert_eval_command(container["args"])
    assert command == ["run"]
    assert params["wait"] is False  # extraArgs: --no-wait
    experiment_path = str(params["experiment_file"])
    mount = next(m for m in container["volumeMounts"] if experiment_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = rendered.get("ConfigMap", volume["configMap"]["name"])
    experiment = yaml.safe_load(config_map["data"]["experiment.yaml"])
    assert experiment["experiment_id"] and experiment["runs"][0]["run_id"]
    assert pod["restartPolicy"] == "Never"


def test_starter_job_name_follows_the_experiment(render) -> None:
    # Jobs are immutable: the same experiment keeps its Job across `helm upgrade`, another gets a new one.
    base = {"starter": {"enabled": True}}
    changed = {
        "starter": {
            "enabled": True,
            "experiment": {"experiment_id": "other", "runs": [{"run_id": "r", "model": "m", "dataset": "d"}]},
        }
    }
    first = render(base).workload("starter")["metadata"]["name"]
    assert render(base).workload("starter")["metadata"]["name"] == first
    assert render(changed).workload("starter")["metadata"]["name"] != first


@profile_names
def test_notes_tell_how_to_watch_open_the_ui_and_start(profile: str, rendered_profiles: dict[str, Rendered]) -> None:
    notes = rendered_profiles[profile].notes
    assert "kubectl get pods" in notes
    assert "Temporal UI" in notes
    assert "experiment" in notes


# --------------------------------------------------------------------------- invalid values

INVALID = [
    (
        {"temporal": {"mode": "external"}, "autoscaling": {"mode": "keda"}},
        "autoscaling.mode=keda needs a Temporal address",
    ),
    ({"temporal": {"mode": "external"}}, "temporal.mode=external requires temporal.address"),
    ({"gpu": {"enabled": True, "count": 0}}, "gpu.enabled=true with gpu.count=0"),
    # The official Temporal chart is no dependency any more: its old switch is refused, not ignored.
    ({"temporal": {"chart": {"enabled": True}}}, "additional properties 'enabled' not allowed"),
    (
        {
            "temporal": {"mode": "external", "address": "t:7233", "tls": {"enabled": True}},
            "autoscaling": {"mode": "keda"},
        },
        "autoscaling.mode=keda with server-only TLS",
    ),
    (
        {
            "temporal": {
                "mode": "external",
                "address": "t:7233",
                "tls": {"enabled": True, "existingSecret": "ca-only", "certKey": ""},
            },
            "autoscaling": {"mode": "keda"},
        },
        "autoscaling.mode=keda with server-only TLS",
    ),
    (
        {
            "temporal": {
                "mode": "external",
                "address": "t:7233",
                "tls": {"enabled": True, "existingSecret": "ca-only", "certKey": ""},
                "apiKey": {"existingSecret": "k"},
            },
            "autoscaling": {"mode": "keda"},
        },
        "ignores the CA when it authenticates with an API key",
    ),
    (
        {"training": {"terminationGracePeriodSeconds": 20}},
        "training.terminationGracePeriodSeconds=20 must exceed training.shutdownMarginSeconds=30",
    ),
    (
        {"eval": {"shutdownMarginSeconds": 60}},
        "eval.terminationGracePeriodSeconds=60 must exceed eval.shutdownMarginSeconds=60",
    ),
    ({"otel": {"endpoint": "otel-collector.observability:4317"}}, "/otel/endpoint"),
    ({"training": {"topologySpreadConstraints": [{"maxSkew": 1}]}}, "/training/topologySpreadConstraints/0"),
    ({"starter": {"podLabels": {"team": 7}}}, "/starter/podLabels/team"),
    (
        {"temporal": {"mode": "external", "address": "t:7233", "apiKey": {"existingSecret": "k"}}},
        "Temporal accepts API keys over TLS only",
    ),
    ({"temporal": {"tls": {"enabled": True}}}, "temporal.mode=dev runs a plaintext dev server"),
    ({"persistence": {"existingClaim": "x", "hostPath": {"enabled": True}}}, "are exclusive"),
    ({"training": {"podDisruptionBudget": {"minAvailable": 1}}}, "either minAvailable or maxUnavailable"),
    ({"autoscaling": {"mode": "keda", "minReplicas": 0}}, "would never start an eval worker"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "autoscaling.minReplicas=5 is greater than"),
    ({"eval": {"resources": {"requests": {"cpu": None}}}}, "needs eval.resources.requests.cpu"),
    ({"monitoring": {"enabled": True}, "metrics": {"service": {"enabled": False}}}, "metrics.service.enabled=false"),
    ({"autoscaling": {"mode": "sometimes"}}, "value must be one of 'keda', 'hpa', 'none'"),
    ({"temporal": {"address": "http://temporal:7233", "mode": "external"}}, "/temporal/address"),
    ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
]


@pytest.mark.parametrize(("values", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_values_fail_with_a_clear_message(values: dict[str, Any], message: str, helm_chart: Any) -> None:
    from helm_python import HelmError

    with pytest.raises(HelmError) as caught:
        helm_chart.render({"assumeApiVersions": list(CRD_API_VERSIONS), **values}, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


# --------------------------------------------------------------------------- chart metadata and lint


def test_chart_has_no_dependency_to_fetch() -> None:
    # `helm install` refuses a chart whose declared dependencies are missing from charts/, whatever
    # their condition: with none declared, dev mode installs offline and `make deploy` fetches nothing.
    chart = yaml.safe_load((CHART_SRC / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert not chart.get("dependencies")
    assert not (CHART_SRC / "Chart.lock").exists() and not (CHART_SRC / "charts").exists()


@pytest.mark.parametrize("profile", ["defaults", *[p for p in PROFILES if p.startswith(("ci/", "examples/"))]])
def test_helm_lint_has_no_errors(profile: str, chart_dir) -> None:
    import helm_python as helm

    report = helm.lint(chart_dir, PROFILES[profile], namespace=NAMESPACE, kube_version="v1.33.0")
    assert not report["errors"], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems


def _schema_node(schema: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for key in path:
        node = (node or {}).get("properties", {}).get(key)
        if node is None:
            return None
    return node


def test_every_documented_values_key_has_a_comment() -> None:
    """Keys of the objects the schema closes (additionalProperties: false), and bert-eval's keys
    under `temporal`, need a comment; free-form maps (resources, nodeSelector, the example
    experiment) are documented by their parent's comment."""
    schema = json.loads((CHART_SRC / "values.schema.json").read_text())
    lines = (CHART_SRC / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    missing = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key in stack] + [match.group(2)]
        stack.append((indent, match.group(2)))
        parent = _schema_node(schema, path[:-1])
        closed = parent is not None and (parent.get("additionalProperties") is False or path[:-1] == ["temporal"])
        if not closed:
            continue  # inside a free-form map or list item
        above = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        if not above.startswith("#") and "#" not in line:
            missing.append(".".join(path))
    assert not missing, f"values.yaml keys without a comment: {missing}"
