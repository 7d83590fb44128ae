"""What would fail on a real cluster though the manifests are valid: Job immutability on
upgrade, platform pod fields, the shutdown budget, KEDA over server-only TLS, traces on kind, the
CPU image on kind, Temporal from the official chart, RWX ownership, and the kind resume demo."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.k8s import (
    CHART_SRC,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    Rendered,
    assert_hardened,
    env_of,
    labels_match,
    make_dry_run,
    parse_bert_eval_command,
)


def _validate(rendered: Rendered) -> None:
    for obj in rendered.objects:
        if obj["kind"] not in {"ServiceMonitor", "PodMonitor", "ScaledObject", "TriggerAuthentication"}:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def _pod(rendered: Rendered, component: str) -> dict[str, Any]:
    workload = rendered.workload(component)
    assert workload is not None, component
    return workload["spec"]["template"]


# --------------------------------------------------------------------------- starter Job name


STARTER = {"starter": {"enabled": True}}


def _starter_name(render, values: dict[str, Any], **kwargs: Any) -> str:
    return render(values, **kwargs).workload("starter")["metadata"]["name"]


@pytest.mark.parametrize(
    "change",
    [
        {"starter": {"enabled": True, "extraArgs": ["--no-wait"]}},
        {"starter": {"enabled": True}, "images": {"eval": {"tag": "0.2.0"}}},
        {"starter": {"enabled": True}, "images": {"eval": {"repository": "registry.example/bert-eval-eval"}}},
        {"starter": {"enabled": True, "extraEnv": [{"name": "HF_HUB_OFFLINE", "value": "1"}]}},
        {"starter": {"enabled": True}, "logFormat": "console"},
        {"starter": {"enabled": True}, "temporal": {"namespace": "other"}},
        {"starter": {"enabled": True, "resources": {"requests": {"cpu": "200m"}, "limits": {"memory": "2Gi"}}}},
    ],
    ids=["args", "image-tag", "image-repository", "env", "config-env", "temporal-namespace", "resources"],
)
def test_starter_job_name_changes_with_its_pod_spec(render, change: dict[str, Any]) -> None:
    # A Job's pod template is immutable: `helm upgrade` with any pod change must create a new Job.
    before, after = render(STARTER), render(change)
    assert before.workload("starter")["spec"]["template"] != after.workload("starter")["spec"]["template"]
    assert _starter_name(render, STARTER) != _starter_name(render, change)


def test_starter_job_name_is_stable_and_fits_a_dns_label(render) -> None:
    assert _starter_name(render, STARTER) == _starter_name(render, {"starter": {"enabled": True}})
    long_release = "a-release-name-that-is-long-enough-to-truncate-bert-eval"
    name = _starter_name(render, STARTER, name=long_release)
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    other = _starter_name(render, {"starter": {"enabled": True, "extraArgs": ["--no-wait"]}}, name=long_release)
    assert other != name  # the hash survives truncation


# --------------------------------------------------------------------------- platform pod fields


PLATFORM = {
    "priorityClassName": "ml-batch",
    "runtimeClassName": "nvidia",
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "bert-eval"}},
        }
    ],
    "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca-bundle"}}],
    "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    "extraEnv": [{"name": "REQUESTS_CA_BUNDLE", "value": "/etc/corp-ca/ca.crt"}],
    "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
    "podLabels": {"team": "ml-platform"},
}


def test_platform_fields_reach_every_bert_eval_pod_spec(render, helm_chart) -> None:
    values = {
        "imagePullSecrets": [{"name": "registry-creds"}],
        "training": PLATFORM,
        "eval": PLATFORM,
        "starter": {"enabled": True, **PLATFORM},
    }
    helm_chart.validate_schema(values)
    rendered = render(values)
    _validate(rendered)
    for component in ("training-worker", "eval-worker", "starter"):
        template = _pod(rendered, component)
        spec = template["spec"]
        assert spec["priorityClassName"] == "ml-batch", component
        assert spec["runtimeClassName"] == "nvidia", component
        assert spec["topologySpreadConstraints"] == PLATFORM["topologySpreadConstraints"], component
        assert spec["imagePullSecrets"] == [{"name": "registry-creds"}], component
        assert {"name": "corp-ca", "configMap": {"name": "corp-ca-bundle"}} in spec["volumes"], component
        (container,) = spec["containers"]
        assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in container["volumeMounts"]
        assert env_of(container)["REQUESTS_CA_BUNDLE"]["value"] == "/etc/corp-ca/ca.crt", component
        assert template["metadata"]["annotations"] == PLATFORM["podAnnotations"], component
        assert template["metadata"]["labels"]["team"] == "ml-platform", component
        assert template["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert_hardened(component, spec)
    # The Deployments' selectors ignore the extra labels, so adding them never orphans pods.
    for component in ("training-worker", "eval-worker"):
        assert "team" not in rendered.workload(component)["spec"]["selector"]["matchLabels"]


def test_platform_fields_are_absent_unless_set(rendered_profiles: dict[str, Rendered]) -> None:
    for component in ("training-worker", "eval-worker"):
        spec = _pod(rendered_profiles["defaults"], component)["spec"]
        assert not {"priorityClassName", "runtimeClassName", "topologySpreadConstraints"} & set(spec)


# --------------------------------------------------------------------------- graceful shutdown


def test_graceful_shutdown_env_leaves_a_margin_before_sigkill(render, rendered_profiles: dict[str, Rendered]) -> None:
    defaults = rendered_profiles["defaults"]
    for component, grace in (("training-worker", 120), ("eval-worker", 60)):
        spec = _pod(defaults, component)["spec"]
        assert spec["terminationGracePeriodSeconds"] == grace
        assert env_of(spec["containers"][0])["BERT_EVAL_GRACEFUL_SHUTDOWN_S"]["value"] == str(grace - 30)
    slow_storage = render({"training": {"terminationGracePeriodSeconds": 600, "shutdownMarginSeconds": 45}})
    spec = _pod(slow_storage, "training-worker")["spec"]
    assert spec["terminationGracePeriodSeconds"] == 600
    assert env_of(spec["containers"][0])["BERT_EVAL_GRACEFUL_SHUTDOWN_S"]["value"] == "555"
    from bert_eval.settings import Settings

    assert Settings(graceful_shutdown_s="555").graceful_shutdown_s == 555  # the variable parses as the worker reads it


# --------------------------------------------------------------------------- KEDA over TLS


def test_keda_with_a_client_certificate_gets_tls_material_it_uses(render) -> None:
    values = {
        "temporal": {
            "mode": "external",
            "address": "temporal.example.internal:7233",
            "tls": {"enabled": True, "existingSecret": "mtls"},
        },
        "autoscaling": {"mode": "keda"},
    }
    (auth,) = render(values).by_kind("TriggerAuthentication")
    # KEDA's temporal scaler dials TLS only with cert+key (or an API key); the CA rides along with them.
    assert {p["parameter"] for p in auth["spec"]["secretTargetRef"]} == {"ca", "cert", "key"}


# --------------------------------------------------------------------------- traces on kind


def test_kind_profile_ships_a_collector_and_jaeger_and_points_every_pod_at_them(
    rendered_profiles: dict[str, Rendered],
) -> None:
    rendered = rendered_profiles["examples/kind"]
    collector_service = rendered.get("Service", f"{RELEASE}-otel-collector")
    jaeger_service = rendered.get("Service", f"{RELEASE}-jaeger")
    collector = _pod(rendered, "otel-collector")
    jaeger = _pod(rendered, "jaeger")
    for service, template in ((collector_service, collector), (jaeger_service, jaeger)):
        assert labels_match(service["spec"]["selector"], template["metadata"]["labels"])
        container_ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", template["spec"]["containers"][0]["image"]), "pin tracing images"
        assert_hardened(template["metadata"]["labels"]["app.kubernetes.io/component"], template["spec"])
    assert {p["name"]: p["port"] for p in jaeger_service["spec"]["ports"]} == {"otlp-grpc": 4317, "ui": 16686}

    endpoint = f"http://{RELEASE}-otel-collector.{NAMESPACE}.svc:4317"
    for component in ("training-worker", "eval-worker"):
        env = env_of(_pod(rendered, component)["spec"]["containers"][0])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == endpoint

    # The collector receives on the port the workers send to and exports to Jaeger's OTLP port.
    config_map = rendered.get("ConfigMap", f"{RELEASE}-otel-collector")
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    (exporter_name,) = config["service"]["pipelines"]["traces"]["exporters"]
    assert config["exporters"][exporter_name]["endpoint"] == f"{RELEASE}-jaeger.{NAMESPACE}.svc:4317"
    assert set(config["service"]["pipelines"]["traces"]["processors"]) <= set(config["processors"])
    assert f"svc/{RELEASE}-jaeger 16686:16686" in rendered.notes
    mount = next(m for m in collector["spec"]["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert collector["spec"]["containers"][0]["args"] == [f"--config={mount['mountPath']}/config.yaml"]


def test_tracing_is_off_unless_asked_for(rendered_profiles: dict[str, Rendered]) -> None:
    for profile in ("defaults", "ci/default", "examples/gke"):
        rendered = rendered_profiles[profile]
        assert not rendered.component("Deployment", "otel-collector") and not rendered.component("Deployment", "jaeger")


def test_an_explicit_otlp_endpoint_wins_over_the_in_chart_collector(render) -> None:
    rendered = render({"tracing": {"enabled": True}, "otel": {"endpoint": "https://otlp.example.com:4317"}})
    env = env_of(_pod(rendered, "training-worker")["spec"]["containers"][0])
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "https://otlp.example.com:4317"


# --------------------------------------------------------------------------- kind: the CPU image


def test_kind_runs_training_on_the_cpu_image_and_never_loads_the_cuda_one(
    rendered_profiles: dict[str, Rendered],
) -> None:
    rendered = rendered_profiles["examples/kind"]
    training_image = _pod(rendered, "training-worker")["spec"]["containers"][0]["image"]
    eval_image = _pod(rendered, "eval-worker")["spec"]["containers"][0]["image"]
    assert training_image == eval_image == "bert-eval-eval:dev"
    commands = make_dry_run("kind-images", "kind-load")
    # For the nodes' platform, and loaded through an archive (Docker 29's containerd image store
    # breaks `kind load docker-image`).
    assert commands == [
        (
            "docker build --platform linux/amd64 -f services/Dockerfile.eval "
            "--build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm \\"
        ),
        "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t bert-eval-eval:dev .",
        "mkdir -p .kind",
        "docker save --platform linux/amd64 -o .kind/eval-image.tar bert-eval-eval:dev",
        "kind load image-archive --name bert-eval .kind/eval-image.tar",
        "rm -f .kind/eval-image.tar",
    ]
    # Cloud images follow PLATFORM; kind's follow the Docker server's own architecture (KIND_PLATFORM).
    arm = make_dry_run("images", "kind-images", "kind-load", "PLATFORM=linux/arm64", "KIND_PLATFORM=linux/arm64")
    assert sum("docker build --platform linux/arm64 " in c for c in arm) == 3
    assert "docker save --platform linux/arm64 -o .kind/eval-image.tar bert-eval-eval:dev" in arm
    cloud_only = make_dry_run("images", "kind-images", "PLATFORM=linux/arm64", "KIND_PLATFORM=linux/amd64")
    assert sum("docker build --platform linux/arm64 " in c for c in cloud_only) == 2
    assert sum("docker build --platform linux/amd64 " in c for c in cloud_only) == 1
    # The GKE/EKS profiles keep the CUDA training image.
    gke = _pod(rendered_profiles["examples/gke"], "training-worker")["spec"]["containers"][0]["image"]
    assert "bert-eval-training" in gke


# --------------------------------------------------------------------------- Temporal: dev offline, chart as a release


def test_make_deploy_fetches_no_chart_for_bert_eval() -> None:
    commands = make_dry_run("deploy")
    assert not [c for c in commands if "dependency" in c or "go.temporal.io" in c], commands
    (install,) = [c for c in commands if "upgrade --install bert-eval charts/bert-eval" in c]
    assert "examples/values-kind.yaml" in install


def test_temporal_chart_mode_points_at_the_official_release_in_its_own_namespace(render) -> None:
    rendered = render({"temporal": {"mode": "chart", "chart": {"releaseName": "temporal", "namespace": "temporal"}}})
    env = env_of(_pod(rendered, "training-worker")["spec"]["containers"][0])
    assert env["TEMPORAL_ADDRESS"]["value"] == "temporal-frontend.temporal.svc:7233"
    prod = render({"temporal": {"mode": "chart", "chart": {"releaseName": "prod", "namespace": "temporal-prod"}}})
    assert env_of(_pod(prod, "eval-worker")["spec"]["containers"][0])["TEMPORAL_ADDRESS"]["value"] == (
        "prod-temporal-frontend.temporal-prod.svc:7233"
    )
    policy = rendered.get("NetworkPolicy", f"{RELEASE}-workers")
    temporal_rules = [r for r in policy["spec"]["egress"] if any(p["port"] == 7233 for p in r.get("ports", []))]
    assert [r["to"] for r in temporal_rules] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "temporal"}}}]
    ]
    assert "kubectl port-forward -n temporal svc/temporal-web 8080:8080" in rendered.notes


def test_official_chart_recipe_configures_a_datastore_and_the_default_namespace() -> None:
    recipe = yaml.safe_load((CHART_SRC / "examples" / "temporal-official-chart-values.yaml").read_text())
    persistence = recipe["server"]["config"]["persistence"]
    for store in (persistence["defaultStore"], persistence["visibilityStore"]):
        sql = persistence["datastores"][store]["sql"]
        assert (
            sql["pluginName"] == "postgres12" and sql["connectAddr"] and sql["existingSecret"] and "password" not in sql
        )
    namespaces = recipe["server"]["config"]["namespaces"]
    assert namespaces["create"] is True
    values = yaml.safe_load((CHART_SRC / "values.yaml").read_text())
    assert {"name": values["temporal"]["namespace"], "retention": "7d"} in namespaces["namespace"]
    readme = (CHART_SRC / "README.md").read_text()
    assert "examples/temporal-official-chart-values.yaml" in readme and "enforce=baseline" in readme


# --------------------------------------------------------------------------- RWX ownership


def test_gke_filestore_volume_is_handed_to_uid_10001_by_fsgroup(rendered_profiles: dict[str, Rendered]) -> None:
    rendered = rendered_profiles["examples/gke"]
    assert rendered.values["persistence"]["storageClassName"] == "standard-rwx"
    for component in ("training-worker", "eval-worker"):
        spec = _pod(rendered, component)["spec"]
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["fsGroup"] == 10001
        assert "initContainers" not in spec  # restricted PSA: no root init step by default


def test_volume_permissions_init_hands_the_volume_root_to_the_pod_user(render) -> None:
    rendered = render({"persistence": {"volumePermissions": {"enabled": True}, "mountPath": "/data/runs"}})
    _validate(rendered)
    for component in ("training-worker", "eval-worker"):
        spec = _pod(rendered, component)["spec"]
        (init,) = spec["initContainers"]
        assert init["command"] == ["sh", "-c", "chown 10001:10001 /data/runs && chmod 2775 /data/runs"]
        assert init["volumeMounts"] == [{"name": "runs", "mountPath": "/data/runs"}]
        ctx = init["securityContext"]
        assert ctx["runAsUser"] == 0 and ctx["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
        assert ctx["allowPrivilegeEscalation"] is False and not ctx.get("privileged")
        (main,) = spec["containers"]
        assert main["securityContext"]["runAsNonRoot"] is True  # only the init step runs as root


# --------------------------------------------------------------------------- make experiment / demo-k8s


def test_make_experiment_returns_once_submitted() -> None:
    commands = make_dry_run("experiment")
    assert not [c for c in commands if "logs -f" in c and not c.startswith("echo")], commands
    assert any(c.endswith("bert-eval wait sst2-minilm --until started --timeout 600") for c in commands)


def test_make_demo_k8s_submits_waits_for_a_checkpoint_kills_and_waits_for_the_resume(
    rendered_profiles: dict[str, Rendered], manifest_objects: dict[str, list[dict[str, Any]]]
) -> None:
    commands = make_dry_run("demo-k8s")
    rendered = rendered_profiles["examples/kind"]
    eval_deployment = rendered.workload("eval-worker")["metadata"]["name"]
    in_cluster = f"kubectl --context kind-bert-eval -n {NAMESPACE} exec deploy/{eval_deployment} -- bert-eval "
    waits, order = [], []
    for command in commands:
        if command.startswith(in_cluster):
            path, params = parse_bert_eval_command(command.removeprefix(in_cluster).split())
            assert path == ["wait"]
            waits.append(params)
            order.append(f"wait:{params['until'].value}")
        elif " delete pod " in command:
            order.append("kill")
            selector = dict(pair.split("=") for pair in command.split(" -l ")[1].split()[0].split(","))
            training = rendered.workload("training-worker")["spec"]["template"]["metadata"]["labels"]
            eval_labels = rendered.workload("eval-worker")["spec"]["template"]["metadata"]["labels"]
            assert labels_match(selector, training) and not labels_match(selector, eval_labels)
            assert "--grace-period=0" in command
        elif command.startswith("sed ") and "manifests/experiment-configmap.yaml" in command:
            order.append("submit")
            # What the demo applies: the example experiment under ids of its own.
            sed = command.split(" | ")[0]
            applied = subprocess.run(["sh", "-c", sed], cwd=REPO, capture_output=True, text=True, check=True).stdout
            submitted = yaml.safe_load(yaml.safe_load(applied)["data"]["experiment.yaml"])
        elif "apply -f manifests/starter-job.yaml" in command:
            order.append("starter")
    assert order == ["submit", "starter", "wait:started", "wait:checkpoint", "kill", "wait:done"]
    (config_map,) = manifest_objects["experiment-configmap.yaml"]
    original = yaml.safe_load(config_map["data"]["experiment.yaml"])
    # Fresh ids: an earlier experiment of the example's id cannot answer the waits.
    assert submitted["experiment_id"] != original["experiment_id"]
    assert submitted["experiment_id"].startswith(original["experiment_id"] + "-")
    suffix = submitted["experiment_id"].removeprefix(original["experiment_id"])
    assert [r["run_id"] for r in submitted["runs"]] == [r["run_id"] + suffix for r in original["runs"]]
    assert {w["experiment_id"] for w in waits} == {submitted["experiment_id"]}
    # The starter Job keeps waiting in the cluster, so the demo never blocks on it.
    starter = next(o for o in manifest_objects["starter-job.yaml"] if o["kind"] == "Job")
    assert starter["spec"]["template"]["spec"]["containers"][0]["args"][0] == "run"
