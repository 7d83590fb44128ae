"""The experiment report, built from artifacts written by the real core (Trainer fine-tune, evaluation).

No Temporal: runs are trained by calling the core directly, including a graceful stop and a resume,
so the report has real checkpoint and resume events to mark.
"""

from __future__ import annotations

import base64
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer
from support.specs import tiny_run
from typer.testing import CliRunner

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
from bert_eval.core.errors import TrainingInterrupted
from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.records import SnapshotResult, TrainingProgress
from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.core.storage.layout import RunLayout, experiment_file
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.report import report_command, write_report
from bert_eval.spec import RunSpec

EXPERIMENT = "report-exp"
STOP_AT = 6  # tiny runs have 16 steps and checkpoint every 4


class _Rows(HTMLParser):
    """`<tr id="row-...">` → [(cell text, cell attributes)] of the metrics table."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: dict[str, list[tuple[str, dict[str, str | None]]]] = {}
        self._row: str | None = None
        self._cell: tuple[list[str], dict[str, str | None]] | None = None
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and dict(attrs).get("id", "").startswith("row-"):
            self._row = dict(attrs)["id"].removeprefix("row-")
            self.rows[self._row] = []
        elif tag == "td" and self._row is not None:
            self._cell = ([], dict(attrs))
        elif tag == "th":
            self._in_th = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self.rows[self._row].append(("".join(self._cell[0]), self._cell[1]))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "th":
            self._in_th = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)
        elif self._in_th:
            self.headers.append(data)

    def cell(self, run_id: str, header: str) -> tuple[str, dict[str, str | None]]:
        return self.rows[run_id][self.headers.index(header)]


def _train(
    spec: RunSpec,
    snapshot: SnapshotResult,
    runs_dir: Path,
    *,
    attempt: int = 1,
    previous: TrainingProgress | None = None,
    stop_at: int | None = None,
) -> TrainingProgress:
    latest: list[TrainingProgress] = []
    request = FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, attempt=attempt, previous=previous)
    fine_tune(
        request,
        on_progress=latest.append,
        should_stop=(lambda: stop_at is not None and bool(latest) and latest[-1].step >= stop_at),
    )
    return latest[-1]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_dir: Path) -> Path:
    """Four runs in four states: completed, completed after a resume, stopped (incomplete), never trained."""
    runs_dir = tmp_path_factory.mktemp("report") / "bert_runs"
    specs = {
        run_id: RunSpec.model_validate(tiny_run(tiny_model_dir, run_id, learning_rate=lr))
        for run_id, lr in (("tiny-a", 1e-3), ("tiny-b", 5e-4), ("tiny-c", 1e-3), ("tiny-never", 1e-3))
    }
    # The runs differ only in learning rate: one snapshot holds the rows of all of them.
    snapshot = create_snapshot(SnapshotInput.for_run(specs["tiny-a"]), runs_dir=runs_dir, data_dir=data_dir)

    _train(specs["tiny-a"], snapshot, runs_dir)
    # tiny-b: stopped gracefully after a checkpoint, then resumed by a second attempt.
    with pytest.raises(TrainingInterrupted):
        _train(specs["tiny-b"], snapshot, runs_dir, stop_at=STOP_AT)
    stopped = json.loads((RunLayout(runs_dir, "tiny-b").journal_file).read_text().splitlines()[-1])
    assert stopped["event"] == "checkpoint" and stopped["step"] == STOP_AT
    previous = TrainingProgress(run_id="tiny-b", step=STOP_AT, heartbeat_time=time.time(), attempt=1)
    _train(specs["tiny-b"], snapshot, runs_dir, attempt=2, previous=previous)
    # tiny-c: stopped and never resumed.
    with pytest.raises(TrainingInterrupted):
        _train(specs["tiny-c"], snapshot, runs_dir, stop_at=STOP_AT)

    for run_id in ("tiny-a", "tiny-b"):
        layout = RunLayout(runs_dir, run_id)
        evaluate(
            run_id=run_id,
            model_dir=layout.model_dir,
            snapshot=snapshot,
            request=specs[run_id].primary_eval,
            runs_dir=runs_dir,
        )
    atomic_write_json(experiment_file(runs_dir, EXPERIMENT), {"experiment_id": EXPERIMENT, "run_ids": list(specs)})
    return runs_dir


def test_report_overlays_the_loss_curves_and_draws_one_per_run_on_request(experiment: Path, tmp_path: Path) -> None:
    overlaid = write_report(experiment, EXPERIMENT, tmp_path / "default")
    assert sorted(p.name for p in overlaid.parent.glob("*.png")) == ["loss-by-config.png"]
    assert overlaid.read_text().count("<img") == 1 and "bert-eval report --per-run" in overlaid.read_text()


def test_report_has_a_curve_per_trained_run_and_the_metrics_table(experiment: Path, tmp_path: Path) -> None:
    runs_dir = experiment
    report = write_report(runs_dir, EXPERIMENT, tmp_path / "out", per_run_charts=True)
    assert report == tmp_path / "out" / "report.html" and report.is_file()
    page = report.read_text()
    print(f"\nreport: {report} ({report.stat().st_size} bytes)")

    # One curve per run that has a loss history (tiny-c's comes from its last checkpoint), embedded and beside,
    # after the chart that overlays them all.
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert pngs == ["loss-by-config.png", "loss-tiny-a.png", "loss-tiny-b.png", "loss-tiny-c.png"]
    embedded = re.findall(r'<img alt="training loss of ([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [run_id for run_id, _ in embedded] == ["tiny-a", "tiny-b", "tiny-c"]
    assert page.count("<img") == 4
    for run_id, data in embedded:
        assert base64.b64decode(data) == (report.parent / f"loss-{run_id}.png").read_bytes()
    assert 'src="http' not in page and "<link" not in page and "<script" not in page  # self-contained

    rows = _Rows()
    rows.feed(page)
    assert list(rows.rows) == ["tiny-a", "tiny-b", "tiny-c", "tiny-never"]
    for run_id in ("tiny-a", "tiny-b"):
        written = json.loads(RunLayout(runs_dir, run_id).eval_file("validation").read_text())
        accuracy = written["metrics"]["accuracy"]
        text, attrs = rows.cell(run_id, "accuracy")
        assert (text, attrs.get("title")) == (f"{accuracy:.4f}", repr(accuracy))
        assert rows.cell(run_id, "state")[0] == "completed"
        assert rows.cell(run_id, "steps")[0] == "16"
    assert rows.cell("tiny-a", "resumes")[0] == "0"
    assert rows.cell("tiny-b", "resumes")[0] == "1"
    assert re.search(rf"resumed from step {STOP_AT} \(attempt 2, 0 steps redone", page)
    assert rows.cell("tiny-c", "state")[0] == f"incomplete (last checkpoint at step {STOP_AT})"
    assert rows.cell("tiny-c", "accuracy")[0] == "—"
    assert rows.cell("tiny-never", "state")[0] == "no artifacts on disk"


def test_report_command(experiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    app.command()(report_command)
    monkeypatch.setenv("BERT_EVAL_RUNS_DIR", str(experiment))  # settings are read afresh for each test (conftest)
    runner = CliRunner()
    bad = runner.invoke(app, ["../etc"])
    assert bad.exit_code == 2 and "invalid experiment_id" in " ".join(bad.output.split())

    unknown = runner.invoke(app, ["no-such-experiment"])
    assert unknown.exit_code == 1 and "does not exist" in " ".join(unknown.output.split())

    out = tmp_path / "cli-report"
    done = runner.invoke(app, [EXPERIMENT.upper(), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == str(out / "report.html") and (out / "report.html").is_file()
