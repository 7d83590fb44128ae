"""Fixtures for the Kubernetes packaging tests: the chart rendered by the real Helm engine
(helm-python-sdk embeds Helm v4) for every value profile, and the objects in manifests/.

No cluster is involved. The chart is rendered from a temporary copy so that a test dashboard can
be added when charts/bert-eval/dashboards/ holds none yet.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.k8s import (
    CHART_SRC,
    CRD_API_VERSIONS,
    KIND_CONFIG,
    MANIFESTS,
    NAMESPACE,
    PROFILES,
    RELEASE,
    TEST_DASHBOARD,
    Rendered,
    load_yaml,
    parse_docs,
)


def pytest_report_header(config: pytest.Config) -> str:
    return f"bert-eval chart profiles: {', '.join(PROFILES)}"


@pytest.fixture(scope="session")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of charts/bert-eval; gets a test dashboard when the repo has none yet."""
    target = tmp_path_factory.mktemp("chart") / "bert-eval"
    shutil.copytree(CHART_SRC, target, ignore=shutil.ignore_patterns("charts", "*.tgz"))
    dashboards = target / "dashboards"
    dashboards.mkdir(exist_ok=True)
    if not list(dashboards.glob("*.json")):
        (dashboards / "bert-eval-test.json").write_text(json.dumps(TEST_DASHBOARD, indent=2))
    return target


@pytest.fixture(scope="session")
def helm_chart(chart_dir: Path) -> Iterator[Any]:
    import helm_python as helm

    with helm.Chart.load(chart_dir) as chart:
        yield chart


@pytest.fixture(scope="session")
def render(helm_chart: Any):
    """render(values) -> Rendered, with the release/namespace the manifests assume."""
    cache: dict[str, Rendered] = {}

    def _render(
        values: dict[str, Any], *, name: str = RELEASE, namespace: str = NAMESPACE, cluster_crds: bool = True
    ) -> Rendered:
        """cluster_crds: render as for a cluster that serves KEDA's and the Prometheus Operator's APIs
        (what `helm install` finds there); False: a cluster without them."""
        key = json.dumps([values, name, namespace, cluster_crds], sort_keys=True)
        if key not in cache:
            if cluster_crds and "assumeApiVersions" not in values:
                values = {**values, "assumeApiVersions": list(CRD_API_VERSIONS)}
            files = helm_chart.render(values, name=name, namespace=namespace, is_install=True)
            objects: list[dict[str, Any]] = []
            notes = ""
            for path, text in sorted(files.items()):
                if path.endswith("NOTES.txt"):
                    notes = text
                    continue
                objects.extend(parse_docs(text))
            cache[key] = Rendered(values=values, objects=objects, notes=notes, files=files)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def rendered_profiles(render) -> dict[str, Rendered]:
    return {name: render(values) for name, values in PROFILES.items()}


@pytest.fixture(scope="session")
def manifest_objects() -> dict[str, list[dict[str, Any]]]:
    return {path.name: parse_docs(path.read_text()) for path in sorted(MANIFESTS.glob("*.yaml"))}


@pytest.fixture(scope="session")
def kind_config() -> dict[str, Any]:
    return load_yaml(KIND_CONFIG)
