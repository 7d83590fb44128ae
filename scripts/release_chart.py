"""Package charts/bert-eval for one release and push it to an OCI registry (`make release`).

The packaged chart's version and appVersion are VERSION, and its default image repositories name
REGISTRY, so `helm install oci://REGISTRY/bert-eval --version VERSION -f values-<profile>.yaml`
installs the images pushed next to it. Uses the Helm engine of helm-python-sdk (no helm binary).

    python scripts/release_chart.py --registry 127.0.0.1:5000/team --version 0.3.0 [--plain-http]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

CHART = Path(__file__).resolve().parents[1] / "charts" / "bert-eval"
IMAGES = ("training", "eval")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")


def pin_images(values_text: str, registry: str) -> str:
    """values.yaml with images.<training|eval>.repository set to <registry>/bert-eval-<name>; comments kept.

    Raises ValueError when values.yaml does not hold exactly one repository line per image.
    """
    for name in IMAGES:
        pattern = re.compile(rf"^(\s+repository:\s*)\S*/?bert-eval-{name}\s*$", re.MULTILINE)
        values_text, count = pattern.subn(rf"\g<1>{registry}/bert-eval-{name}", values_text)
        if count != 1:
            raise ValueError(f"charts/bert-eval/values.yaml: expected one images.{name}.repository line, found {count}")
    return values_text


def package(registry: str, version: str, destination: Path) -> Path:
    """The chart archive for this release, written to `destination`."""
    import helm_python as helm

    work = Path(tempfile.mkdtemp(prefix="bert-eval-chart-"))
    try:
        chart = work / "bert-eval"
        shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("*.tgz"))
        values = chart / "values.yaml"
        values.write_text(pin_images(values.read_text(), registry))
        destination.mkdir(parents=True, exist_ok=True)
        return Path(helm.package(chart, destination=destination, version=version, app_version=version))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def push(archive: Path, registry: str, *, plain_http: bool) -> str:
    """Push the archive to oci://<registry>; returns the chart reference."""
    import helm_python as helm

    with helm.RegistryClient(plain_http=plain_http) as client:
        client.push(archive, f"oci://{registry}", plain_http=plain_http)
    return f"oci://{registry}/bert-eval"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="host[:port][/path] the images were pushed to")
    parser.add_argument("--version", required=True, help="chart version and image tag (semver)")
    parser.add_argument("--plain-http", action="store_true", help="HTTP instead of HTTPS (a local registry)")
    parser.add_argument("--destination", type=Path, default=Path("dist"), help="where the .tgz is written")
    args = parser.parse_args(argv)
    if not SEMVER.match(args.version):
        parser.error(f"VERSION={args.version} is not semver (e.g. 0.3.0): Helm refuses other chart versions")
    registry = args.registry.removeprefix("oci://").rstrip("/")
    archive = package(registry, args.version, args.destination)
    reference = push(archive, registry, plain_http=args.plain_http)
    print(f"pushed {archive.name} to {reference} --version {args.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
