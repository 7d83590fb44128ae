"""`bert-eval chaos kill --target podman`: the pod that holds the training activity is chosen among the
podman pods matching the selector, and all of its containers get SIGKILL (a fake `podman` records it)."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest

from bert_eval.chaos import Target, WorkerIdentity, kill_training_workers

PODS = [
    {"Name": "bert-eval-training-worker-pod-0", "Status": "Running"},
    {"Name": "bert-eval-training-worker-pod-1", "Status": "Running"},
]


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "bin" / "podman"
    script.parent.mkdir()
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"if sys.argv[1:3] == ['pod', 'ps']: print({json.dumps(json.dumps(PODS))})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_podman_target_kills_the_busy_pod(fake_podman: Path) -> None:
    busy = {WorkerIdentity(1, "bert-eval-training-worker-pod-1")}
    [kill] = kill_training_workers(target=Target.podman, busy_lookup=lambda: busy, rng=random.Random(0))
    assert kill.name == "podman/bert-eval-training-worker-pod-1"
    assert "holds a running training activity" in kill.reason
    calls = [json.loads(line) for line in fake_podman.read_text().splitlines()]
    assert "--filter=label=app.kubernetes.io/component=training-worker" in calls[0]
    assert calls[-1] == ["pod", "kill", "--signal", "KILL", "bert-eval-training-worker-pod-1"]


def test_podman_target_filters_on_every_selector_term(fake_podman: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kills = kill_training_workers(
        target=Target.podman, selector="app.kubernetes.io/component=nothing-here,tier=x",
        busy_lookup=set, rng=random.Random(0),
    )
    # The fake lists pods whatever the filter; what matters is that every selector term became a filter.
    calls = [json.loads(line) for line in fake_podman.read_text().splitlines()]
    assert {"--filter=label=app.kubernetes.io/component=nothing-here", "--filter=label=tier=x"} <= set(calls[0])
    assert [k.name for k in kills] in (["podman/bert-eval-training-worker-pod-0"], ["podman/bert-eval-training-worker-pod-1"])


def test_release_option_limits_the_kill_to_that_releases_pods(fake_podman: Path) -> None:
    from typer.testing import CliRunner

    from bert_eval.chaos import chaos_app

    done = CliRunner().invoke(chaos_app, ["--target", "podman", "--release", "team-a", "--any"])
    assert done.exit_code == 0, done.output
    calls = [json.loads(line) for line in fake_podman.read_text().splitlines()]
    assert {
        "--filter=label=app.kubernetes.io/component=training-worker",
        "--filter=label=app.kubernetes.io/instance=team-a",
    } <= set(calls[0])
