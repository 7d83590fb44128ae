"""A search's report, from a runs directory as a finished ASHA search leaves it (written here by hand):
the leaderboard, the rung ladder and the parameters against the objective, the winner marked."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.core.storage.layout import RunLayout, experiment_file
from bert_eval.report import write_report

SEARCH = "asha-report"
RUNGS = [3, 9, 20]
METRIC = "accuracy"
# (learning_rate, warmup_ratio, batch_size, objectives per rung, state): 6 trials, η = 3. Rung 0 in trial
# order promotes t1 after three results and t2 after six; neither of the two at rung 1 ranks in its top
# third, so the leader (t1) trains on to its budget. t4's first rung failed.
TRIALS = [
    (1.0e-4, 0.05, 16, [0.62], "stopped"),
    (8.0e-4, 0.10, 32, [0.70, 0.76, 0.80], "completed"),
    (2.5e-3, 0.00, 16, [0.68, 0.71], "stopped"),
    (3.0e-4, 0.15, 32, [0.64], "stopped"),
    (1.5e-4, 0.02, 16, [None], "failed"),
    (5.0e-4, 0.19, 32, [0.66], "stopped"),
]
WINNER = f"{SEARCH}-t0001"
FINAL = {"accuracy": 0.7913, "f1": 0.8022}


def _trial_id(index: int) -> str:
    return f"{SEARCH}-t{index:04d}"


def _write_search(runs_dir: Path) -> None:
    trials = []
    for index, (lr, warmup, batch, objectives, state) in enumerate(TRIALS):
        run_id = _trial_id(index)
        rung = len(objectives) - 1
        for step, objective in zip(RUNGS, objectives, strict=False):
            if objective is None:
                continue  # a failed rung records nothing
            rung_result = {
                "run_id": run_id, "step": step, "metrics": {"accuracy": objective, "f1": objective - 0.01},
                "examples": 40, "snapshot_id": "snap-0123", "fingerprint": f"fp-{index}", "seconds": 1.5,
            }  # fmt: skip
            atomic_write_json(RunLayout(runs_dir, run_id).root / "rungs" / f"step-{step}.json", rung_result)
        trials.append(
            {
                "trial": index,
                "run_id": run_id,
                "params": {"train.learning_rate": lr, "train.warmup_ratio": warmup, "train.batch_size": batch},
                "rung": rung,
                "steps": RUNGS[rung],
                "state": state,
                "objective": objectives[-1],
                "objectives": objectives,
                "metrics": FINAL if state == "completed" else None,
                "train_seconds": 4.0 * (rung + 1),
                "error": "fine_tune: CUDA out of memory at step 2" if state == "failed" else None,
            }
        )
    outcome = {
        "experiment_id": SEARCH,
        "metric": METRIC,
        "maximize": True,
        "rungs": RUNGS,
        "trials": trials,
        "best": WINNER,
        "promotions": ["1:0->1", "2:0->1", "1:1->2"],
        "continued": 0,
        "finished": True,
    }
    record = experiment_file(runs_dir, SEARCH)
    atomic_write_json(record.with_name(f"{SEARCH}.search.json"), outcome)
    # The experiment's record holds the template run only: it is never trained.
    atomic_write_json(record, {"experiment_id": SEARCH, "run_ids": ["template"]})

    winner = RunLayout(runs_dir, WINNER)
    history = [{"step": step, "loss": 0.7 - 0.01 * step} for step in range(1, 21)]
    atomic_write_json(winner.history_file, {"log_history": history})
    evaluation = {
        "run_id": WINNER,
        "split": "validation",
        "examples": 872,
        "metrics": FINAL,
        "duration_s": 2.0,
        "path": "x",
    }
    atomic_write_json(winner.eval_file("validation"), evaluation)


class _Leaderboard(HTMLParser):
    """The leaderboard's rows: run id -> (class attribute, cell texts), in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: dict[str, tuple[str, list[str]]] = {}
        self._in = False
        self._row: str | None = None
        self._text: list[str] | None = None
        self._header = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._in = attributes.get("class") == "leaderboard"
        elif self._in and tag == "tr" and (attributes.get("id") or "").startswith("trial-"):
            self._row = (attributes["id"] or "").removeprefix("trial-")
            self.rows[self._row] = (attributes.get("class") or "", [])
        elif self._in and tag in ("td", "th"):
            self._text, self._header = [], tag == "th"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in = False
        elif tag in ("td", "th") and self._text is not None:
            text = "".join(self._text)
            if self._header:
                self.headers.append(text)
            elif self._row is not None:
                self.rows[self._row][1].append(text)
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def cell(self, run_id: str, header: str) -> str:
        return self.rows[run_id][1][self.headers.index(header)]


def _pixels_near(png: bytes, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    from matplotlib.image import imread

    image = (imread(io.BytesIO(png), format="png")[..., :3] * 255).round()
    return int(np.all(np.abs(image - np.array(rgb)) <= tolerance, axis=-1).sum())


@pytest.fixture
def page(runs_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    _write_search(runs_dir)
    report = write_report(runs_dir, SEARCH, tmp_path / "out")
    return report, report.read_text()


def test_leaderboard_ranks_trials_by_rung_then_objective_and_marks_the_winner(page: tuple[Path, str]) -> None:
    _, html = page
    board = _Leaderboard()
    board.feed(html)
    ranked = [_trial_id(i) for i in (1, 2, 5, 3, 0, 4)]  # rung 2, rung 1, rung 0 by objective, failed last
    assert list(board.rows) == ranked
    params = ["batch_size", "learning_rate", "warmup_ratio"]  # as the record holds them (atomic_write_json sorts keys)
    assert board.headers[:9] == ["rank", "trial", "run", *params, "rung (steps)", METRIC, f"{METRIC} per rung (steps)"]
    winner_class, _ = board.rows[WINNER]
    assert "winner" in winner_class.split() and all(
        "winner" not in c.split() for r, (c, _) in board.rows.items() if r != WINNER
    )
    assert board.cell(WINNER, "trial") == "★ 1"
    assert board.cell(WINNER, "rung (steps)") == "2 (20)"
    assert board.cell(WINNER, METRIC) == "0.8000"
    assert board.cell(WINNER, f"{METRIC} per rung (steps)") == "0.7000 (3) → 0.7600 (9) → 0.8000 (20)"
    assert board.cell(WINNER, "final accuracy") == "0.7913" and board.cell(WINNER, "final f1") == "0.8022"
    assert board.cell(WINNER, "learning_rate") == "0.0008" and board.cell(WINNER, "batch_size") == "32"
    stopped = _trial_id(2)
    assert board.cell(stopped, "state") == "stopped" and board.cell(stopped, "rung (steps)") == "1 (9)"
    assert board.cell(stopped, "final accuracy") == "—"
    failed = _trial_id(4)
    assert board.cell(failed, "state") == "failed: fine_tune: CUDA out of memory at step 2"
    assert board.cell(failed, f"{METRIC} per rung (steps)") == "failed (3)"
    assert "winner: trial 1 (asha-report-t0001), accuracy 0.8000 at 20 steps" in html
    assert "6 trials (4 stopped, 1 completed, 1 failed)" in html


def test_rung_ladder_and_params_figures_are_embedded_and_written_beside(page: tuple[Path, str]) -> None:
    report, html = page
    figures = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html))
    ladder, params = figures["rung ladder"], figures["searched parameters against the objective"]
    for name, data in (("rung-ladder.png", ladder), ("params-vs-objective.png", params)):
        written = (report.parent / name).read_bytes()
        assert base64.b64decode(data) == written
        assert written.startswith(b"\x89PNG") and len(written) > 20_000, name
    ladder_png, params_png = base64.b64decode(ladder), base64.b64decode(params)
    # The winner's line is drawn thick in orange, the stopped trials in grey: both are on the ladder.
    assert _pixels_near(ladder_png, (0xFF, 0x7F, 0x0E)) > 300
    assert _pixels_near(ladder_png, (0x8C, 0x8C, 0x8C)) > 100
    assert _pixels_near(params_png, (0xFF, 0x7F, 0x0E)) > 50  # the winner ringed in each panel
    # The learning rates span 25x: a log axis; warmup ratio and batch size do not.
    assert "log axis: learning_rate." in html


def test_a_search_reports_its_trials_not_the_template_run(page: tuple[Path, str]) -> None:
    report, html = page
    rows = re.findall(r'<tr id="row-([^"]+)"><td class="run">[^<]*</td><td class="state">([^<]*)</td>', html)
    assert [run_id for run_id, _ in rows] == [_trial_id(i) for i in range(len(TRIALS))]
    states = dict(rows)
    assert states[_trial_id(2)] == "stopped by the search at step 9"
    assert states[_trial_id(4)] == "failed: fine_tune: CUDA out of memory at step 2"
    # The trials' loss curves share one chart (per-run charts only on request); the template run, never
    # trained, is not mentioned.
    assert sorted(p.name for p in report.parent.glob("*.png")) == [
        "params-vs-objective.png",
        "rung-ladder.png",
        "trial-curves.png",
    ]
    assert 'id="row-template"' not in html and "No loss history for: asha-report-t0000" in html


def test_an_unreadable_search_record_leaves_a_plain_report(runs_dir: Path, tmp_path: Path) -> None:
    _write_search(runs_dir)
    experiment_file(runs_dir, SEARCH).with_name(f"{SEARCH}.search.json").write_text(
        json.dumps({"experiment_id": SEARCH})
    )
    html = write_report(runs_dir, SEARCH, tmp_path / "out").read_text()
    assert "asha-report.search.json unreadable (ValidationError)" in html
    assert '<table class="leaderboard">' not in html and 'id="row-template"' in html
