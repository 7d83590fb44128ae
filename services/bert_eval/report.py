"""Experiment report from the runs directory alone: one self-contained HTML page.

`write_report()` reads `experiments/<id>.json` for the run ids, then per run the artifacts the core
writes (RunLayout): the loss history (`training-history.json`, or the newest checkpoint's
`trainer_state.json` while a run is unfinished), checkpoint and resume events (`events.jsonl`), the
training summary and the `eval-<split>.json` files. It draws one loss curve per run with checkpoint and
resume markers, a runs × metrics table, and, when the experiment's statistics are on disk
(`experiments/<id>.summary.json`), each run's and each configuration's 95% interval. A run with missing or unreadable artifacts gets a row that
says what state it is in; it never stops the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from bert_eval.core.checkpoints import CheckpointStore
from bert_eval.core.fsutil import atomic_write_text
from bert_eval.core.journal import RunJournal
from bert_eval.core.layout import RunLayout, experiment_file
from bert_eval.core.records import EvalResult, ExperimentSummary, TrainingSummary
from bert_eval.spec import normalize_id

__all__ = ["ReportError", "RunRecord", "collect_run", "report_command", "write_report"]

# Metrics where a smaller value is the better one (everything else: larger is better).
_LOWER_IS_BETTER = frozenset({"mse", "final loss"})
_TRAINER_STATE = "trainer_state.json"


class ReportError(RuntimeError):
    """The report cannot be written at all (the experiment is unknown here)."""


@dataclass
class RunRecord:
    """What the runs directory says about one run."""

    run_id: str
    state: str = "no artifacts on disk"
    losses: list[tuple[int, float]] = field(default_factory=list)
    loss_source: str | None = None
    checkpoints: list[int] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    summary: TrainingSummary | None = None
    evaluations: dict[str, EvalResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading


def _read_json(path: Path, record: RunRecord) -> Any | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        record.problems.append(f"{path.name} unreadable ({exc})")
        return None


def _losses(log_history: Any) -> list[tuple[int, float]]:
    if not isinstance(log_history, list):
        return []
    return [
        (int(entry["step"]), float(entry["loss"]))
        for entry in log_history
        if isinstance(entry, dict) and "loss" in entry and "step" in entry
    ]


def collect_run(runs_dir: Path, run_id: str) -> RunRecord:
    """Everything the report shows for one run; never raises on missing or damaged files."""
    record = RunRecord(run_id=run_id)
    layout = RunLayout(runs_dir, run_id)
    if not layout.root.is_dir():
        return record

    events = RunJournal(layout.journal_file).read()
    record.checkpoints = sorted({int(e["step"]) for e in events if e.get("event") == "checkpoint" and "step" in e})
    record.resumes = [e for e in events if e.get("event") == "resume"]

    summary = _read_json(layout.summary_file, record)
    if summary is not None:
        try:
            record.summary = TrainingSummary.model_validate(summary["summary"])
        except (KeyError, TypeError, ValueError) as exc:
            record.problems.append(f"{layout.summary_file.name} invalid ({exc.__class__.__name__})")

    history = _read_json(layout.history_file, record)
    if isinstance(history, dict):
        record.losses, record.loss_source = _losses(history.get("log_history")), layout.history_file.name
    latest = CheckpointStore(layout.checkpoints).latest_complete()
    if not record.losses and latest is not None:
        # Unfinished run: the Trainer keeps the log history so far in every checkpoint.
        state = _read_json(latest.path / _TRAINER_STATE, record)
        if isinstance(state, dict):
            record.losses, record.loss_source = _losses(state.get("log_history")), f"{latest.path.name}/{_TRAINER_STATE}"

    for eval_file in sorted(layout.root.glob("eval-*.json")):
        payload = _read_json(eval_file, record)
        if payload is None:
            continue
        try:
            result = EvalResult.model_validate(payload)
        except ValueError as exc:
            record.problems.append(f"{eval_file.name} invalid ({exc.__class__.__name__})")
            continue
        record.evaluations[result.split] = result

    if record.summary is not None and record.evaluations:
        record.state = "completed"
    elif record.summary is not None:
        record.state = "trained, not evaluated"
    elif latest is not None:
        record.state = f"incomplete (last checkpoint at step {latest.step})"
    else:
        record.state = "started, no checkpoint yet"
    return record


def _experiment_run_ids(runs_dir: Path, experiment_id: str) -> list[str]:
    path = experiment_file(runs_dir, experiment_id)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(
            f"experiment {experiment_id}: {path} does not exist. Check the experiment id and that "
            "BERT_EVAL_RUNS_DIR points at the runs directory the workers write to."
        ) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"experiment {experiment_id}: cannot read {path}: {exc}") from None
    run_ids = payload.get("run_ids") if isinstance(payload, dict) else None
    if not isinstance(run_ids, list) or not all(isinstance(r, str) for r in run_ids):
        raise ReportError(f"experiment {experiment_id}: {path} has no 'run_ids' list of strings")
    return run_ids


# --------------------------------------------------------------------------- drawing


def _loss_curve_png(record: RunRecord) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps, losses = zip(*record.losses, strict=True)
    axes.plot(steps, losses, color="#1f77b4", linewidth=1.6, label="training loss")
    for index, step in enumerate(record.checkpoints):
        axes.axvline(step, color="#7f7f7f", linestyle=":", linewidth=1, label="checkpoint" if index == 0 else None)
    for resume in record.resumes:
        start = int(resume.get("from_step") or 0)
        label = f"resume (attempt {resume.get('attempt', '?')})"
        axes.axvline(start, color="#d62728", linestyle="--", linewidth=1.5, label=label)
        lost = resume.get("steps_lost")
        if lost:
            # The steps the lost attempt had done past its checkpoint, redone by the next one.
            axes.axvspan(start, start + int(lost), color="#d62728", alpha=0.12)
    axes.set_title(f"{record.run_id}: training loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } td.run, td.state { text-align: left; }
td.best { font-weight: bold; }
section { margin: 1.5rem 0; } p.caption, p.meta { color: #555; font-size: 0.9rem; }
"""


def _cell(value: float | int | None, *, digits: int, best: bool = False) -> str:
    if value is None:
        return "<td>—</td>"
    cls = ' class="best"' if best else ""
    return f'<td{cls} title="{html.escape(repr(value))}">{value:.{digits}f}</td>'


def _metric_columns(records: list[RunRecord]) -> list[tuple[str, str, str]]:
    """(split, metric, header) in first-seen order; the split appears in the header only when there are several."""
    seen: dict[tuple[str, str], None] = {}
    for record in records:
        for split, result in record.evaluations.items():
            for metric in result.metrics:
                seen.setdefault((split, metric), None)
    splits = {split for split, _ in seen}
    return [(split, metric, metric if len(splits) == 1 else f"{metric} ({split})") for split, metric in seen]


def _best(values: list[float | None], name: str) -> float | None:
    present = [v for v in values if v is not None]
    if len(set(present)) < 2:  # one value, or all equal: nothing stands out
        return None
    return min(present) if name in _LOWER_IS_BETTER else max(present)


def _table(records: list[RunRecord]) -> str:
    columns = _metric_columns(records)
    rows_values: list[list[float | int | None]] = []
    for record in records:
        values: list[float | int | None] = []
        for split, metric, _ in columns:
            result = record.evaluations.get(split)
            values.append(result.metrics.get(metric) if result else None)
        s = record.summary
        values += [
            s.steps if s else None,
            s.final_loss if s else None,
            len(record.checkpoints),
            s.resumes if s else len(record.resumes),
            s.wall_time_s if s else None,
        ]
        rows_values.append(values)
    headers = [header for _, _, header in columns] + ["steps", "final loss", "checkpoints", "resumes", "wall time (s)"]
    digits = [4] * len(columns) + [0, 4, 0, 0, 1]
    ranked = {i for i, _ in enumerate(columns)} | {len(columns) + 1}
    best = [_best([row[i] for row in rows_values], headers[i]) if i in ranked else None for i in range(len(headers))]

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", "state", *headers])
    body = []
    for record, values in zip(records, rows_values, strict=True):
        state = html.escape(record.state + (f"; {'; '.join(record.problems)}" if record.problems else ""))
        cells = "".join(
            _cell(v, digits=d, best=b is not None and v == b) for v, d, b in zip(values, digits, best, strict=True)
        )
        body.append(
            f'<tr id="row-{html.escape(record.run_id)}"><td class="run">{html.escape(record.run_id)}</td>'
            f'<td class="state">{state}</td>{cells}</tr>'
        )
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _caption(record: RunRecord) -> str:
    parts = [f"loss from {record.loss_source}"]
    if record.checkpoints:
        parts.append("checkpoints at steps " + ", ".join(str(s) for s in record.checkpoints))
    for resume in record.resumes:
        text = f"resumed from step {resume.get('from_step')} (attempt {resume.get('attempt', '?')}"
        if resume.get("steps_lost") is not None:
            text += f", {resume['steps_lost']} steps redone"
        if resume.get("recovery_seconds") is not None:
            text += f", {resume['recovery_seconds']:.1f} s to recover"
        parts.append(text + ")")
    return html.escape("; ".join(parts))


def write_report(runs_dir: Path, experiment_id: str, out_dir: Path) -> Path:
    """Write `out_dir/report.html` (PNGs embedded) and the PNGs beside it; returns the HTML path."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    records = [collect_run(runs_dir, run_id) for run_id in _experiment_run_ids(runs_dir, experiment_id)]
    out_dir.mkdir(parents=True, exist_ok=True)

    sections = []
    for record in records:
        if not record.losses:
            continue
        png = _loss_curve_png(record)
        (out_dir / f"loss-{record.run_id}.png").write_bytes(png)
        data = base64.b64encode(png).decode("ascii")
        rid = html.escape(record.run_id)
        sections.append(
            f'<section id="run-{rid}"><h2>{rid}</h2>'
            f'<img alt="training loss of {rid}" src="data:image/png;base64,{data}">'
            f'<p class="caption">{_caption(record)}</p></section>'
        )
    without_curve = [r.run_id for r in records if not r.losses]
    note = (
        f"<p class=\"meta\">No loss history for: {html.escape(', '.join(without_curve))}.</p>" if without_curve else ""
    )
    title = f"bert-eval report: {experiment_id}"
    document = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="meta">{len(records)} runs from {html.escape(str(runs_dir))}; '
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Bold: best value in its column. "
        "Wall time runs from the first training attempt's start to completion, recovery included.</p>"
        f"<h2>Metrics</h2>{_table(records)}"
        f"{_summary_tables(runs_dir, experiment_id)}"
        f"<h2>Loss curves</h2>{note}{''.join(sections)}"
        "</body></html>\n"
    )
    report = out_dir / "report.html"
    atomic_write_text(report, document)
    report.chmod(0o644)  # a page to share; the temporary file it was renamed from was private
    return report


def _summary_tables(runs_dir: Path, experiment_id: str) -> str:
    """Intervals per run and per configuration, from the statistics the coordinator wrote (if any)."""
    path = experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}.summary.json")
    try:
        summary = ExperimentSummary.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return ""

    def interval(low: float | None, high: float | None) -> str:
        return f"[{low:.4f}, {high:.4f}]" if low is not None and high is not None else "–"

    runs = "".join(
        f"<tr><td>{html.escape(r.run_id)}</td><td>{html.escape(r.config)}</td><td>{html.escape(r.metric)}</td>"
        f"<td>{r.value:.4f}</td><td>{interval(r.low, r.high)}</td></tr>"
        for r in summary.runs
    )
    configs = "".join(
        f"<tr><td>{html.escape(c.config)}</td><td>{c.n}</td><td>{html.escape(c.metric)}</td><td>{c.mean:.4f}</td>"
        f"<td>{'' if c.std is None else f'{c.std:.4f}'}</td><td>{interval(c.low, c.high)}</td>"
        f"<td>{c.min:.4f} / {c.max:.4f}</td><td>{html.escape(c.mark or '')}</td></tr>"
        for c in summary.configs
    )
    head = "".join(f"<th>{h}</th>" for h in ("config", "seeds", "metric", "mean", "std", "95% CI of the mean", "min / max", "vs best"))
    return _matrix_table(summary) + (
        f"<h2>Configurations on {html.escape(summary.split)}</h2>"
        f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{configs}</tbody></table>'
        "<h2>Runs: 95% bootstrap interval over evaluation examples</h2>"
        '<table class="metrics"><thead><tr><th>run</th><th>config</th><th>metric</th><th>value</th><th>95% CI</th></tr></thead>'
        f"<tbody>{runs}</tbody></table>"
    )


def _matrix_table(summary: ExperimentSummary) -> str:
    """Models (runs) x evaluation sets (dataset, split), each cell its metric and 95% bootstrap interval."""
    columns = sorted({(cell.dataset or "", cell.split or "") for cell in summary.matrix})
    if len(columns) < 2:
        return ""
    rows: dict[str, dict[tuple[str, str], str]] = {}
    for cell in summary.matrix:
        ci = f" [{cell.low:.4f}, {cell.high:.4f}]" if cell.low is not None and cell.high is not None else ""
        rows.setdefault(cell.run_id, {})[(cell.dataset or "", cell.split or "")] = f"{cell.metric} {cell.value:.4f}{ci}"
    head = "<th>model (run)</th>" + "".join(f"<th>{html.escape(d)} · {html.escape(s)}</th>" for d, s in columns)
    body = "".join(
        f"<tr><td>{html.escape(run_id)}</td>" + "".join(f"<td>{html.escape(cells.get(c, '–'))}</td>" for c in columns) + "</tr>"
        for run_id, cells in rows.items()
    )
    return (
        "<h2>Evaluation matrix: models × evaluation sets (95% bootstrap interval)</h2>"
        f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


# --------------------------------------------------------------------------- CLI


def report_command(
    experiment_id: Annotated[str, typer.Argument(help="experiment id, as submitted")],
    out: Annotated[
        Path | None, typer.Option("--out", help="output directory [default: reports/<experiment_id>]")
    ] = None,
) -> None:
    """Write an HTML report: loss curves with checkpoint/resume markers and a metrics table."""
    from rich.console import Console

    from bert_eval.settings import get_settings

    try:
        experiment_id = normalize_id(experiment_id, what="experiment_id")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="EXPERIMENT_ID") from None
    try:
        path = write_report(get_settings().runs_dir, experiment_id, out or Path("reports") / experiment_id)
    except ReportError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(str(path))
