"""The README's durability walkthrough, run as written (with the tiny model, and the server on free
ports so tests can run side by side): server, eval worker, two training workers on one machine (all
on the default metrics port), run, chaos kill."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.harness import REPO, Stack, stop_process, wait_for_checkpoint
from support.ports import free_port
from support.specs import LONG, tiny_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _walkthrough_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Durability: kill the training worker, watch it resume", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_readme_durability_walkthrough_runs_as_written(tmp_path: Path, data_dir: Path, tiny_model_dir: Path) -> None:
    commands = _walkthrough_commands()
    assert commands == [
        "bert-eval server &",
        "bert-eval worker eval &",
        "bert-eval worker training &",
        "bert-eval worker training &",
        "bert-eval run services/bert_eval/experiments/sst2-minilm.yaml",
        "bert-eval chaos kill",
    ], "the README walkthrough changed: update this test with it"
    port = free_port()
    # The walkthrough's environment: no BERT_EVAL_METRICS_PORT, so all three workers want 9464.
    stack = Stack(
        address=f"127.0.0.1:{port}",
        runs_dir=tmp_path / "bert_runs",
        data_dir=data_dir,
        log_dir=tmp_path / "logs",
        server=None,
    )
    stack.log_dir.mkdir()
    env = stack.env()
    env.pop("BERT_EVAL_METRICS_PORT", None)
    # `bert-eval run` submits with this heartbeat timeout: Temporal notices the killed worker within it
    # (the README's 30 s default would be most of this test's wall time; the commands are as written).
    env["BERT_EVAL_HEARTBEAT_TIMEOUT_S"] = "5"
    experiment = tmp_path / "experiment.yaml"
    # 750 steps (as the chaos test): training is still going when `chaos kill` has asked Temporal which worker
    # is busy, even on a loaded machine.
    walk = tiny_run(tiny_model_dir, "walk", **{**LONG, "max_train_samples": 6000})
    experiment.write_text(yaml.safe_dump({"experiment_id": "walkthrough", "runs": [walk]}))

    def bert_eval(command: str, log: str) -> subprocess.Popen:
        args = shlex.split(command.rstrip("&"))[1:]
        if args[0] == "server":
            args += ["--port", str(port), "--ui-port", str(free_port()), "--db", str(tmp_path / "temporal.db")]
        if args[0] == "run":
            args = ["run", str(experiment), "--json", str(tmp_path / "results.json")]
        return subprocess.Popen(
            [sys.executable, "-m", "bert_eval", *args],
            env=env,
            stdout=open(tmp_path / "logs" / log, "wb"),
            stderr=subprocess.STDOUT,
        )

    processes = []
    try:
        processes.append(bert_eval(commands[0], "server.log"))
        time.sleep(1)
        workers = [bert_eval(command, f"worker-{i}.log") for i, command in enumerate(commands[1:4])]
        processes += workers
        run = bert_eval(commands[4], "run.log")
        processes.append(run)
        wait_for_checkpoint(stack.runs_dir, "walk", timeout_s=300)
        chaos = subprocess.run(
            [sys.executable, "-m", "bert_eval", *shlex.split(commands[5])[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert chaos.returncode == 0, chaos.stdout + chaos.stderr
        assert run.wait(timeout=400) == 0, (tmp_path / "logs" / "run.log").read_text()[-3000:]
        [record] = json.loads((tmp_path / "results.json").read_text())
        assert record["status"] == "completed" and record["training"]["resumes"] >= 1
        killed = [w for w in workers if w.poll() is not None]
        assert len(killed) == 1 and killed[0].returncode == -9  # only the busy training worker died
        logs = [(tmp_path / "logs" / f"worker-{i}.log").read_text() for i in range(3)]
        moved = [log for log in logs if "metrics port 9464 is in use" in log]
        assert len(moved) >= 2, "every worker after the first should have moved off the taken port"
        print(
            f"\nwalkthrough: chaos said {chaos.stdout.strip()!r}; {len(moved)} workers moved off port 9464; "
            f"resumes {record['training']['resumes']}"
        )
    finally:
        for process in reversed(processes):
            stop_process(process, timeout_s=20)
