"""The report's figures for experiments too large to chart run by run, built from records written by hand
(no training): a 120-trial search, and a seeded experiment whose statistics mark the best configuration."""

from __future__ import annotations

import io
import itertools
import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.core.storage.layout import RunLayout, experiment_file
from bert_eval.report import write_report
from bert_eval.report.figures import BEST_COLOUR, NOT_WORSE_COLOUR, WORSE_COLOUR, log_ticks

SEARCH = "big-search"
RUNGS = [2, 6, 18, 54]
TRIALS = 120


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _pixels_near(png: bytes, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    from matplotlib.image import imread

    image = (imread(io.BytesIO(png), format="png")[..., :3] * 255).round()
    return int(np.all(np.abs(image - np.array(rgb)) <= tolerance, axis=-1).sum())


def _images(html: str) -> dict[str, str]:
    return dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html))


def _write_big_search(runs_dir: Path) -> None:
    """120 trials of ASHA with η = 3 over 4 rungs: most stopped at rung 0, a few at 1 and 2, 4 completed,
    3 failed; each with a loss history up to the steps it trained."""
    rng = np.random.default_rng(7)
    trials = []
    for index in range(TRIALS):
        run_id = f"{SEARCH}-t{index:04d}"
        rung = 3 if index % 30 == 0 else 2 if index % 10 == 0 else 1 if index % 3 == 0 else 0
        failed = index in (7, 55, 101)
        objectives = [float(0.55 + 0.08 * r + rng.normal(0, 0.02)) for r in range(rung + 1)]
        state = "failed" if failed else "completed" if rung == 3 else "stopped"
        if failed:
            objectives[-1] = None
        steps = RUNGS[rung]
        history = [
            {"step": s, "loss": float(0.7 * np.exp(-s / (20 + index % 17)) + rng.normal(0, 0.01))}
            for s in range(1, steps + 1)
        ]
        atomic_write_json(RunLayout(runs_dir, run_id).history_file, {"log_history": history})
        trials.append(
            {
                "trial": index,
                "run_id": run_id,
                "rung": rung,
                "steps": steps,
                "state": state,
                "params": {
                    "train.learning_rate": float(10 ** rng.uniform(-5, np.log10(3e-4))),
                    "train.warmup_ratio": float(rng.uniform(0, 0.2)),
                },
                "objective": objectives[-1],
                "objectives": objectives,
                "error": "fine_tune: out of memory" if failed else None,
            }
        )
    best = max((t for t in trials if t["state"] == "completed"), key=lambda t: t["objective"])
    outcome = {
        "experiment_id": SEARCH,
        "metric": "accuracy",
        "maximize": True,
        "rungs": RUNGS,
        "trials": trials,
        "best": best["run_id"],
        "finished": True,
    }
    record = experiment_file(runs_dir, SEARCH)
    atomic_write_json(record.with_name(f"{SEARCH}.search.json"), outcome)
    atomic_write_json(record, {"experiment_id": SEARCH, "run_ids": ["template"]})


def test_a_search_of_120_trials_has_a_bounded_number_of_figures(runs_dir: Path, tmp_path: Path) -> None:
    _write_big_search(runs_dir)
    report = write_report(runs_dir, SEARCH, tmp_path / "out")
    html = report.read_text()
    images = _images(html)
    assert set(images) == {"training loss of every trial", "rung ladder", "searched parameters against the objective"}
    assert sorted(p.name for p in report.parent.glob("*.png")) == [
        "params-vs-objective.png",
        "rung-ladder.png",
        "trial-curves.png",
    ]
    # Every trial is still in the tables, and per-run charts are offered, not drawn.
    assert len(re.findall(r'<tr id="trial-', html)) == TRIALS and len(re.findall(r'<tr id="row-', html)) == TRIALS
    assert "bert-eval report --per-run" in html


def test_per_run_charts_are_drawn_on_request(runs_dir: Path, tmp_path: Path) -> None:
    _write_big_search(runs_dir)
    report = write_report(runs_dir, SEARCH, tmp_path / "out", per_run_charts=True)
    assert len(list(report.parent.glob("loss-*.png"))) == TRIALS


CONFIGS = [  # (config, mark, seed accuracies)
    ("lr-3e-5", "best", [0.91, 0.915, 0.92]),
    ("lr-5e-5", "not significantly worse", [0.905, 0.913, 0.918]),
    ("lr-1e-4", "significantly worse", [0.86, 0.865, 0.87]),
]


def _write_seeded_experiment(runs_dir: Path) -> str:
    experiment = "seeded"
    configs, runs, run_ids = [], [], []
    for index, (config, mark, values) in enumerate(CONFIGS):
        ids = [f"{config}-s{seed}" for seed in range(len(values))]
        run_ids += ids
        mean = float(np.mean(values))
        configs.append(
            {
                "config": config,
                "metric": "accuracy",
                "runs": ids,
                "n": len(values),
                "mean": mean,
                "std": float(np.std(values, ddof=1)),
                "min": min(values),
                "max": max(values),
                "low": mean - 0.006,
                "high": mean + 0.006,
                "mark": mark,
                "p_value": None if mark == "best" else 0.2 if index == 1 else 0.001,
            }
        )
        for seed, (run_id, value) in enumerate(zip(ids, values, strict=True)):
            runs.append(
                {
                    "run_id": run_id,
                    "config": config,
                    "metric": "accuracy",
                    "value": value,
                    "low": value - 0.02,
                    "high": value + 0.02,
                }
            )
            history = [{"step": s, "loss": 0.7 * np.exp(-s / (10 + 5 * index)) + 0.01 * seed} for s in range(1, 31)]
            atomic_write_json(RunLayout(runs_dir, run_id).history_file, {"log_history": history})
    record = experiment_file(runs_dir, experiment)
    atomic_write_json(record, {"experiment_id": experiment, "run_ids": run_ids})
    atomic_write_json(
        record.with_name(f"{experiment}.summary.json"), {"split": "validation", "configs": configs, "runs": runs}
    )
    return experiment


def test_the_configurations_forest_plot_marks_the_best_and_those_not_worse(runs_dir: Path, tmp_path: Path) -> None:
    experiment = _write_seeded_experiment(runs_dir)
    report = write_report(runs_dir, experiment, tmp_path / "out")
    html = report.read_text()
    forest = (report.parent / "configs-forest.png").read_bytes()
    # One colour per verdict: the best (orange star), not significantly worse (blue), worse (grey).
    assert _pixels_near(forest, _hex(BEST_COLOUR)) > 150
    assert _pixels_near(forest, _hex(NOT_WORSE_COLOUR)) > 150
    assert _pixels_near(forest, _hex(WORSE_COLOUR)) > 150
    runs_forest = (report.parent / "runs-forest.png").read_bytes()
    assert _pixels_near(runs_forest, _hex(BEST_COLOUR)) > 50 and _pixels_near(runs_forest, _hex(WORSE_COLOUR)) > 50
    # Nine runs, three configurations: one loss chart with the seeds overlaid, not nine.
    assert set(_images(html)) == {
        "configurations: mean and 95% interval",
        "runs: 95% intervals",
        "training loss by configuration",
    }
    assert "lr-3e-5 (mean of 3)" not in html  # the legend is in the picture; the table names the marks
    assert re.search(r"<td>lr-5e-5</td><td>3</td>.*?<td>not significantly worse</td>", html)


def test_the_best_configuration_is_drawn_even_without_an_interval() -> None:
    from bert_eval.core.records import ExperimentSummary
    from bert_eval.report.figures import config_forest_png

    summary = ExperimentSummary.model_validate(
        {
            "split": "validation",
            "configs": [
                {
                    "config": "only",
                    "metric": "mse",
                    "runs": ["a"],
                    "n": 1,
                    "mean": 0.3,
                    "min": 0.3,
                    "max": 0.3,
                    "mark": "best",
                },
            ],
        }
    )
    assert _pixels_near(config_forest_png(summary), _hex(BEST_COLOUR)) > 50


@pytest.mark.parametrize("low, high", [(1e-5, 3e-4), (2e-5, 8e-5), (1e-6, 1e-1)])
def test_log_axis_tick_labels_do_not_overlap(low: float, high: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.8, 3.4), dpi=100)  # one panel of the parameters figure
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.scatter(np.geomspace(low, high, 50), np.linspace(0.5, 0.9, 50))
    axes.set_xscale("log")
    log_ticks(axes, "x")
    canvas.draw()
    renderer = canvas.get_renderer()
    left, right = axes.get_xlim()
    labels = axes.get_xticklabels() + axes.get_xticklabels(minor=True)
    shown = [label for label in labels if label.get_text() and left <= label.get_position()[0] <= right]
    boxes = [label.get_window_extent(renderer) for label in shown]
    assert len(boxes) >= 2, "at least two labelled ticks"
    for first, second in itertools.combinations(boxes, 2):
        assert not first.overlaps(second), (low, high, [label.get_text() for label in shown])


def test_a_search_naming_a_run_outside_the_runs_directory_is_not_read(runs_dir: Path, tmp_path: Path) -> None:
    _write_big_search(runs_dir)
    path = experiment_file(runs_dir, SEARCH).with_name(f"{SEARCH}.search.json")
    outcome = json.loads(path.read_text())
    outcome["trials"][3]["run_id"] = "../../etc"
    path.write_text(json.dumps(outcome))
    page = write_report(runs_dir, SEARCH, tmp_path / "out").read_text()
    assert "names run ids that are not canonical ('../../etc')" in unescape(page)
    assert '<table class="leaderboard">' not in page
