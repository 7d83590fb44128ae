"""Fixtures of the cluster test (`make test-cluster`): podman with the project's containers.conf, the
images `make images-local` built, and the measurements printed at the end of the session.

`make test` leaves these tests out (marker `cluster`); they need root, podman and the local images.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"

# What the run measured (name -> text), printed after the test summary.
MEASURED: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASURED:
        terminalreporter.section("measured (tests/cluster)")
        for name, value in MEASURED.items():
            terminalreporter.write_line(f"{name}: {value}")


class Podman:
    """`podman` with this project's containers.conf (runc, ulimits a machine without CAP_SYS_RESOURCE allows)."""

    def __init__(self) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def out(self, *args: str, timeout: float = 300) -> str:
        return self(*args, timeout=timeout).stdout.strip()


@pytest.fixture(scope="session")
def podman() -> Podman:
    if os.geteuid() != 0:
        pytest.fail("tests/cluster needs root (rootful podman); run `make test-cluster` as root")
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed; `make images-local` installs it (apt) and builds the images")
    return Podman()
