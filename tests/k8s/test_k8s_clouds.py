"""The chart as cloud users install it, rendered by the real Helm engine: GKE, EKS with Temporal Cloud
(API key on the regional endpoint), external mTLS on a namespace endpoint, temporal.mode=chart, and two
releases side by side on one Temporal namespace. No AKS profile exists in examples/."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from helm_python import HelmError
from support.k8s import CHART_SRC, Rendered, env_of

GKE = yaml.safe_load((CHART_SRC / "examples" / "values-gke.yaml").read_text())
EKS = yaml.safe_load((CHART_SRC / "examples" / "values-eks.yaml").read_text())
MTLS_CLOUD = {
    "temporal": {
        "mode": "external",
        "address": "bert-eval.a1b2c.tmprl.cloud:7233",
        "namespace": "bert-eval.a1b2c",
        "tls": {
            "enabled": True,
            "existingSecret": "temporal-mtls",
            "caKey": "",
            "serverName": "bert-eval.a1b2c.tmprl.cloud",
        },
    },
    "autoscaling": {"mode": "keda"},
}


def _container(rendered: Rendered, component: str) -> dict[str, Any]:
    workload = rendered.workload(component)
    assert workload is not None, component
    return workload["spec"]["template"]["spec"]["containers"][0]


def _value(container: dict[str, Any], name: str) -> str | None:
    entry = env_of(container).get(name)
    return None if entry is None else entry.get("value")


def _fails(render, values: dict[str, Any]) -> str:
    with pytest.raises(HelmError) as caught:
        render(values)
    return str(caught.value)


def test_gke_allows_nodelocal_dns_by_ip_block(render) -> None:
    rendered = render(GKE)
    policy = next(o for o in rendered.by_kind("NetworkPolicy") if o["metadata"]["name"].endswith("-workers"))
    dns = policy["spec"]["egress"][0]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns["to"]
    assert {p["port"] for p in dns["ports"]} == {53}
    # The training pod requests its GPU and lands on the accelerator pool.
    training = rendered.workload("training-worker")["spec"]["template"]["spec"]
    assert training["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert training["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def test_eks_temporal_cloud_api_key_uses_the_regional_endpoint(render) -> None:
    rendered = render(EKS)
    address = EKS["temporal"]["address"]
    assert address.endswith(".api.temporal.io:7233")
    for component in ("training-worker", "eval-worker"):
        container = _container(rendered, component)
        assert _value(container, "TEMPORAL_ADDRESS") == address
        assert _value(container, "TEMPORAL_NAMESPACE") == "bert-eval.a1b2c"
        assert env_of(container)["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "temporal-cloud-api-key"
    [scaled] = rendered.component("ScaledObject", "eval-worker")
    assert scaled["spec"]["triggers"][0]["metadata"]["endpoint"] == address
    # NOTES name both search attributes, with the OSS and the Temporal Cloud commands.
    for name in ("BertRunId", "BertExperimentId"):
        assert f"temporal operator search-attribute create --name {name} --type Keyword" in rendered.notes
        assert f"--search-attribute {name}=Keyword" in rendered.notes
    assert "tcld namespace search-attributes add --namespace bert-eval.a1b2c" in rendered.notes


@pytest.mark.parametrize(
    ("address", "warned"),
    [
        ("bert-eval.a1b2c.tmprl.cloud:7233", True),  # valid for high-availability namespaces: a warning, not a refusal
        ("aws-us-east-1.region.tmprl.cloud:7233", False),  # the <cloud>-<region>.region.tmprl.cloud form
        ("us-east-1.aws.api.temporal.io:7233", False),
    ],
)
def test_temporal_cloud_endpoints_with_an_api_key_install(render, address: str, warned: bool) -> None:
    values = json.loads(json.dumps(EKS))
    values["temporal"]["address"] = address
    rendered = render(values)
    assert _value(_container(rendered, "eval-worker"), "TEMPORAL_ADDRESS") == address
    assert ("WARNING: temporal.address=" in rendered.notes) is warned
    if warned:
        assert "high-availability" in rendered.notes and "api.temporal.io:7233" in rendered.notes


def test_mtls_on_the_namespace_endpoint_gives_workers_and_keda_the_server_name(render) -> None:
    rendered = render(MTLS_CLOUD)
    for component in ("training-worker", "eval-worker"):
        container = _container(rendered, component)
        assert _value(container, "TEMPORAL_TLS_SERVER_NAME") == "bert-eval.a1b2c.tmprl.cloud"
        assert _value(container, "TEMPORAL_TLS_CERT_FILE") == "/etc/temporal-tls/tls.crt"
        assert "TEMPORAL_API_KEY" not in env_of(container)
    [scaled] = rendered.component("ScaledObject", "eval-worker")
    assert scaled["spec"]["triggers"][0]["metadata"]["tlsServerName"] == "bert-eval.a1b2c.tmprl.cloud"


def test_server_name_is_passed_only_with_tls(render) -> None:
    values = {"temporal": {"mode": "external", "address": "t.example:7233", "tls": {"serverName": "t.internal"}}}
    assert "TEMPORAL_TLS_SERVER_NAME" not in env_of(_container(render(values), "eval-worker"))


def test_chart_mode_points_at_the_official_charts_frontend(render) -> None:
    rendered = render({"temporal": {"mode": "chart"}})
    assert _value(_container(rendered, "eval-worker"), "TEMPORAL_ADDRESS") == "temporal-frontend.temporal.svc:7233"
    assert "starter.enabled=true" in rendered.notes and "manifests/starter-job.yaml" not in rendered.notes


def test_official_chart_recipe_uses_the_1_0_layout() -> None:
    values = yaml.safe_load((CHART_SRC / "examples" / "temporal-official-chart-values.yaml").read_text())
    # Keys the official chart refuses from 1.0.0-rc.2 on (its templates/_deprecations.tpl).
    for removed in ("cassandra", "mysql", "postgresql", "elasticsearch", "prometheus", "grafana", "schema"):
        assert removed not in values, removed
    persistence = values["server"]["config"]["persistence"]
    assert "default" not in persistence and "visibility" not in persistence
    stores = persistence["datastores"]
    assert persistence["defaultStore"] in stores and persistence["visibilityStore"] in stores
    for store in stores.values():
        assert store["sql"]["pluginName"] == "postgres12" and store["sql"]["manageSchema"] is True


def _two_releases(render) -> tuple[Rendered, Rendered]:
    shared = {
        "temporal": {"mode": "external", "address": "temporal-frontend.temporal.svc:7233"},
        "autoscaling": {"mode": "keda"},
        "monitoring": {"enabled": True},
    }
    team_a = render({**shared, "taskQueuePrefix": "team-a"}, name="team-a")
    team_b = render({**shared, "taskQueuePrefix": "team-b", "starter": {"enabled": True}}, name="team-b")
    return team_a, team_b


def test_two_releases_poll_their_own_queues_and_mount_their_own_volumes(render) -> None:
    releases = _two_releases(render)
    names = [{o["kind"] + "/" + o["metadata"]["name"] for o in r.objects} for r in releases]
    assert not names[0] & names[1], "two releases in one namespace must not share object names"
    for rendered, prefix in zip(releases, ("team-a", "team-b"), strict=True):
        pods = [_container(rendered, c) for c in ("training-worker", "eval-worker")]
        assert {_value(c, "BERT_EVAL_TASK_QUEUE_PREFIX") for c in pods} == {prefix}
        [scaled] = rendered.component("ScaledObject", "eval-worker")
        assert scaled["spec"]["triggers"][0]["metadata"]["taskQueue"] == f"{prefix}-bert-eval-task-queue"
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for w in ("training-worker", "eval-worker")
            for v in rendered.workload(w)["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {f"{prefix}-bert-eval-runs"}
        assert f"{prefix}-bert-training-task-queue" in rendered.notes
        assert f"--release {prefix}" in rendered.notes
    starter = releases[1].workload("starter")["spec"]["template"]["spec"]["containers"][0]
    assert _value(starter, "BERT_EVAL_TASK_QUEUE_PREFIX") == "team-b"


def test_two_releases_get_their_own_dashboards(render) -> None:
    uids, filters = [], []
    for rendered, release in zip(_two_releases(render), ("team-a", "team-b"), strict=True):
        for config_map in rendered.component("ConfigMap", "dashboards"):
            (payload,) = config_map["data"].values()
            model = json.loads(payload)
            uids.append(model["uid"])
            consts = {v["name"]: v["query"] for v in model["templating"]["list"] if v["type"] == "constant"}
            assert consts == {"namespace": "bert-eval", "release": release}
            exprs = [t["expr"] for p in model["panels"] for t in p.get("targets", []) if "expr" in t]
            assert exprs and all('app_kubernetes_io_instance="$release"' in e for e in exprs)
            filters.append(model["title"])
        [monitor] = rendered.by_kind("ServiceMonitor")
        assert "app.kubernetes.io/instance" in monitor["spec"]["podTargetLabels"]
    assert len(set(uids)) == len(uids) == 2 * len(list((CHART_SRC / "dashboards").glob("*.json"))) == 8


def test_keda_task_queue_that_is_not_the_workers_is_refused(render) -> None:
    message = _fails(
        render,
        {"taskQueuePrefix": "team-a", "autoscaling": {"mode": "keda", "keda": {"taskQueue": "bert-eval-task-queue"}}},
    )
    assert "team-a-bert-eval-task-queue" in message


def test_kind_profile_keeps_the_reference_queue_names_and_offers_manifests(rendered_profiles) -> None:
    rendered = rendered_profiles["examples/kind"]
    assert "BERT_EVAL_TASK_QUEUE_PREFIX" not in env_of(_container(rendered, "eval-worker"))
    [scaled] = rendered.component("ScaledObject", "eval-worker")
    assert scaled["spec"]["triggers"][0]["metadata"]["taskQueue"] == "bert-eval-task-queue"
    assert "manifests/starter-job.yaml" in rendered.notes


def test_hostpath_pv_keeps_like_its_claim_and_the_collector_rolls_with_its_config(rendered_profiles, render) -> None:
    rendered = rendered_profiles["examples/kind"]
    [pv] = rendered.by_kind("PersistentVolume")
    [pvc] = rendered.component("PersistentVolumeClaim", "runs-storage")
    assert (
        pv["metadata"]["annotations"]["helm.sh/resource-policy"]
        == "keep"
        == pvc["metadata"]["annotations"]["helm.sh/resource-policy"]
    )
    checksum = rendered.workload("otel-collector")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    moved = render({**rendered.values, "fullnameOverride": "other"})  # another Jaeger address in the config
    assert (
        moved.workload("otel-collector")["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum
    )
