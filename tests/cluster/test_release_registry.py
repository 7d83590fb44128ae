"""`make release` against a real OCI registry on 127.0.0.1 (Debian's `docker-registry`): both images
pushed with podman and the chart pushed as an OCI artifact by the Helm engine of helm-python-sdk;
then the chart is pulled back from oci://, rendered with the kind profile (its image defaults now name
the registry and version), and the images are pulled back and compared with what was pushed.

Needs root, podman, docker-registry (`.ci/run` installs it) and the images `make images-local` builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.ports import free_port

from .conftest import MEASURED, REPO, Podman

pytestmark = pytest.mark.cluster

VERSION = "0.0.1-test.1"
# What `make images-local` builds; overridable to release other local images.
SOURCE_IMAGES = {
    "training": os.environ.get("BERT_EVAL_RELEASE_TRAINING_IMAGE", "localhost/bert-eval-training:dev"),
    "eval": os.environ.get("BERT_EVAL_RELEASE_EVAL_IMAGE", "localhost/bert-eval-eval:dev"),
}
KIND_VALUES = REPO / "charts" / "bert-eval" / "examples" / "values-kind.yaml"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """host:port of a fresh docker-registry (distribution) on loopback, storage in tmp_path."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        pytest.fail("docker-registry is not installed: apt-get install docker-registry (`.ci/run` does)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry")}, "delete": {"enabled": True}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    log = (tmp_path / "registry.log").open("w")
    server = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                assert server.poll() is None, (tmp_path / "registry.log").read_text()
                assert time.monotonic() < deadline, "docker-registry did not answer within 30 s"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _image_id(podman: Podman, ref: str) -> str:
    return podman.out("image", "inspect", "--format", "{{.Id}}", ref)


def _render_archive(archive: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    import helm_python as helm

    with helm.Chart.load_archive(archive.read_bytes()) as chart:
        files = chart.render(values, name="bert-eval", namespace="bert-eval", is_install=True)
    return [
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def test_release_pushes_images_and_chart_and_the_chart_installs_from_oci(
    podman: Podman, registry: str, tmp_path: Path
) -> None:
    import helm_python as helm

    for source in SOURCE_IMAGES.values():
        podman("image", "exists", source)  # built by `make images-local`
    target = f"{registry}/bert-eval"
    started = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "release", f"REGISTRY={target}", f"VERSION={VERSION}"],
        cwd=REPO,
        env={
            **podman.env,
            "BUILD": "0",
            "CONTAINER": "podman",
            "PLAIN_HTTP": "1",
            "TRAINING_IMAGE": SOURCE_IMAGES["training"],
            "EVAL_IMAGE": SOURCE_IMAGES["eval"],
            "DIST": str(tmp_path / "dist"),
        },
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    MEASURED["make release (push both images and the chart to a local registry)"] = (
        f"{time.monotonic() - started:.0f} s"
    )

    # The chart, pulled back from the registry.
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    with helm.RegistryClient(plain_http=True) as client:
        assert VERSION in client.tags(f"oci://{target}/bert-eval")
        client.pull(f"oci://{target}/bert-eval", version=VERSION, destination=pulled, plain_http=True)
    (archive,) = pulled.glob("bert-eval-*.tgz")

    # The kind profile without its local image names: the pulled chart's defaults apply.
    values = yaml.safe_load(KIND_VALUES.read_text())
    values.pop("images")
    values["assumeApiVersions"] = ["keda.sh/v1alpha1", "monitoring.coreos.com/v1"]
    objects = _render_archive(archive, values)
    images = {
        c["image"]
        for o in objects
        if o["kind"] in {"Deployment", "Job"}
        for c in o["spec"]["template"]["spec"].get("initContainers", []) + o["spec"]["template"]["spec"]["containers"]
    }
    ours = {image for image in images if "/bert-eval-" in image or image.startswith("bert-eval-")}
    assert ours == {f"{target}/bert-eval-training:{VERSION}", f"{target}/bert-eval-eval:{VERSION}"}, images
    for obj in objects:
        if obj["kind"] not in {"ScaledObject", "ServiceMonitor", "PodMonitor", "TriggerAuthentication"}:
            kubernetes_validate.validate(obj, "1.33", strict=True)

    # The images, pulled back: the same image the release pushed.
    for name, source in SOURCE_IMAGES.items():
        ref = f"{target}/bert-eval-{name}:{VERSION}"
        podman("rmi", ref)
        podman("pull", "--tls-verify=false", ref, timeout=1800)
        assert _image_id(podman, ref) == _image_id(podman, source)
        podman("rmi", ref)
