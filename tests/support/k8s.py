"""Shared data and helpers of the Kubernetes packaging tests (fixtures are in conftest.py):
value profiles, the rendered-objects wrapper, and small selectors over Kubernetes objects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_SRC = REPO / "charts" / "bert-eval"
MANIFESTS = REPO / "manifests"
KIND_CONFIG = REPO / "kind-config.yaml"
RELEASE = "bert-eval"
NAMESPACE = "bert-eval"
KUBE_VERSION = "1.33"
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "ScaledObject", "TriggerAuthentication"}
# API group/versions of those kinds: a cluster with KEDA and the Prometheus Operator serves them.
CRD_API_VERSIONS = ("keda.sh/v1alpha1", "monitoring.coreos.com/v1")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}

# bert_eval lives under services/; make it importable when the package is not installed.
if str(REPO / "services") not in sys.path:
    try:
        import bert_eval  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO / "services"))


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _file_profiles() -> dict[str, dict[str, Any]]:
    profiles = {}
    for path in sorted((CHART_SRC / "ci").glob("*-values.yaml")):
        profiles[f"ci/{path.name.removesuffix('-values.yaml')}"] = load_yaml(path)
    for path in sorted((CHART_SRC / "examples").glob("values-*.yaml")):
        profiles[f"examples/{path.stem.removeprefix('values-')}"] = load_yaml(path)
    return profiles


# Profiles not worth a file of their own. temporal.mode=chart points the workers at the official
# Temporal chart's release (installed next to this chart, never a dependency of it).
INLINE_PROFILES: dict[str, dict[str, Any]] = {
    "temporal-external-plain": {"temporal": {"mode": "external", "address": "temporal.example.internal:7233"}},
    "temporal-chart": {"temporal": {"mode": "chart"}, "autoscaling": {"mode": "keda"}},
    "monitoring-on-defaults": {"monitoring": {"enabled": True}},
}

PROFILES: dict[str, dict[str, Any]] = {"defaults": {}, **_file_profiles(), **INLINE_PROFILES}


TEST_DASHBOARD = {
    "title": "bert-eval test dashboard",
    "uid": "bert-eval-test",
    "schemaVersion": 39,
    "panels": [
        {"type": "timeseries", "title": "up", "targets": [{"expr": "up"}], "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}}
    ],
}


@dataclass
class Rendered:
    """One `helm template` worth of objects."""

    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str
    files: dict[str, str] = field(default_factory=dict)

    def by_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for o in self.by_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        raise KeyError(f"no {kind} {name}; have {[o['metadata']['name'] for o in self.by_kind(kind)]}")

    def component(self, kind: str, component: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.by_kind(kind)
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]

    def workload(self, component: str) -> dict[str, Any] | None:
        found = self.component("Deployment", component) + self.component("Job", component)
        assert len(found) <= 1, f"several workloads for {component}"
        return found[0] if found else None

    def pod_templates(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        yield from pod_templates(self.objects)


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owning object, pod template) for every workload; a CronJob's is two levels down."""
    for o in objects:
        if o["kind"] == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]
        elif o["kind"] in WORKLOAD_KINDS:
            yield o, o["spec"]["template"]


def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def parse_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def parse_bert_eval_command(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse `bert-eval ARGS` with the real CLI's click tree, as the console script would.

    Returns the subcommand path (e.g. ["chaos", "kill"]) and the parsed parameters; raises
    click's UsageError (unknown command, option or missing argument) for anything else. Duck-typed
    because typer may ship its own copy of click.
    """
    import typer.main

    from bert_eval.cli import app

    command = typer.main.get_command(app)
    path: list[str] = []
    remaining = list(args)
    while hasattr(command, "resolve_command"):  # a group
        ctx = command.context_class(command, info_name="bert-eval", resilient_parsing=False)
        name, sub, remaining = command.resolve_command(ctx, remaining)
        assert sub is not None and name is not None, f"no subcommand in {args}"
        path.append(name)
        command = sub
    ctx = command.make_context(path[-1] if path else "bert-eval", remaining)
    return path, ctx.params


def assert_hardened(owner: str, pod_spec: dict[str, Any]) -> None:
    pod_ctx = pod_spec.get("securityContext", {})
    containers = all_containers(pod_spec)
    assert containers, f"{owner} has no containers"
    for c in containers:
        ctx = c.get("securityContext", {})
        where = f"{owner}/{c['name']}"
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, f"{where}: runs as uid 0"
        assert ctx.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
        assert ctx.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert "ALL" in ctx.get("capabilities", {}).get("drop", []), f"{where}: capabilities.drop ALL"
        assert not ctx.get("capabilities", {}).get("add"), f"{where}: adds capabilities"
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
        assert not ctx.get("privileged"), f"{where}: privileged"
        assert c.get("resources", {}).get("limits", {}).get("memory"), f"{where}: memory limit"
        assert c.get("resources", {}).get("requests", {}).get("cpu"), f"{where}: cpu request"
        writable = {m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")}
        assert "/tmp" in writable, f"{where}: no writable /tmp on a read-only root filesystem"
        for name in ("HF_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "HOME"):
            if value := env_of(c).get(name, {}).get("value"):
                assert any(value == m or value.startswith(m.rstrip("/") + "/") for m in writable), (
                    f"{where}: {name}={value}"
                )


def make_dry_run(*targets: str) -> list[str]:
    """The commands `make -n TARGETS` prints (one per line, continuation lines as printed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # Under `make test-fast` the parent's MAKEFLAGS/MAKELEVEL would leak in (and print directories).
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", *targets],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]
