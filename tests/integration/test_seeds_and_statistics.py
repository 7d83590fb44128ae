"""Seeds as replicates through the real workers: one run per seed, statistics per run and per
configuration in the result, the report and `bert-eval compare`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from support.harness import Stack
from support.specs import tiny_run

pytestmark = pytest.mark.integration

SMALL = dict(max_train_samples=64, batch_size=16, checkpoint_every_steps=None)


def _config(model_dir: Path, name: str, learning_rate: float) -> dict:
    run = tiny_run(model_dir, name, learning_rate=learning_rate, **SMALL)
    run["eval"]["max_eval_samples"] = 96
    return {**run, "seeds": 3}


def test_seeds_expand_into_replicates_with_intervals_per_run_and_configuration(
    stack: Stack, tiny_model_dir: Path
) -> None:
    stack.start_workers("training", "eval")
    experiment = {
        "experiment_id": "seeded",
        "runs": [_config(tiny_model_dir, "slow", 1e-5), _config(tiny_model_dir, "fast", 3e-3)],
    }
    result = stack.run_experiment(experiment)

    assert [(r.run_id, r.config, r.status) for r in result.runs] == [
        (f"{config}-s{seed}", config, "completed") for config in ("slow", "fast") for seed in (7, 8, 9)
    ]
    summary = result.summary
    assert summary is not None and summary.split == "validation" and not summary.notes
    by_run = {r.run_id: r for r in summary.runs}
    for run in result.runs:
        interval = by_run[run.run_id]
        assert interval.metric == "accuracy" and interval.value == pytest.approx(run.metrics["accuracy"])
        assert (
            interval.low is not None and interval.high is not None and interval.low <= interval.value <= interval.high
        )
    configs = {c.config: c for c in summary.configs}
    assert set(configs) == {"slow", "fast"}
    for name, config in configs.items():
        values = np.array([r.metrics["accuracy"] for r in result.runs if r.config == name])
        assert config.n == 3 and config.runs == [f"{name}-s{s}" for s in (7, 8, 9)]
        assert config.mean == pytest.approx(values.mean()) and config.std == pytest.approx(values.std(ddof=1))
        assert (config.min, config.max) == (pytest.approx(values.min()), pytest.approx(values.max()))
        if values.std() > 0:  # the t-interval of the mean, computed independently
            half = stats.t.ppf(0.975, df=2) * values.std(ddof=1) / np.sqrt(3)
            assert (config.low, config.high) == (
                pytest.approx(values.mean() - half),
                pytest.approx(values.mean() + half),
            )
    # Exactly one best configuration; the other is marked by a Welch t-test against it (3 seeds each).
    assert (
        sorted(c.mark for c in configs.values())[0] == "best" and [c.mark for c in configs.values()].count("best") == 1
    )
    other = next(c for c in configs.values() if c.mark != "best")
    assert other.mark in ("not significantly worse", "significantly worse") and other.p_value is not None

    # The statistics are on disk for reports, and the report shows them.
    on_disk = json.loads((stack.runs_dir / "experiments" / "seeded.summary.json").read_text())
    assert on_disk == summary.model_dump(mode="json")
    env = stack.env()
    report = subprocess.run(
        [sys.executable, "-m", "bert_eval", "report", "seeded", "--out", str(stack.runs_dir.parent / "report")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    page = (stack.runs_dir.parent / "report" / "report.html").read_text()
    assert "Configurations on validation" in page and "slow-s8" in page

    # compare: the two configurations, seed against seed, in one plain-language line.
    compared = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_eval",
            "compare",
            "slow=slow-s7,slow-s8,slow-s9",
            "fast=fast-s7,fast-s8,fast-s9",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compared.returncode == 0, compared.stderr
    record = json.loads(compared.stdout)
    assert "slow" in record["sentence"] and "fast" in record["sentence"]

    # Resubmitting reuses every run and gives the same statistics.
    again = stack.run_experiment(experiment)
    assert all(r.reused for r in again.runs)
    assert again.summary == summary


def test_bad_seeds_are_refused_before_anything_is_submitted(tmp_path: Path, tiny_model_dir: Path) -> None:
    for seeds, expected in (
        (0, "seeds must be from 1 to 100, got 0"),
        (101, "seeds must be from 1 to 100, got 101"),
        ([3, 3], "lists a seed twice"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(json.dumps({"runs": [{**tiny_run(tiny_model_dir, "bad"), "seeds": seeds}]}))
        done = subprocess.run(
            [sys.executable, "-m", "bert_eval", "run", str(path)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert "runs[0] (run_id 'bad')" in done.stderr and expected in done.stderr
        assert done.stderr.count("\n") == 1
