"""Experiment report from the runs directory alone: one self-contained HTML page.

`write_report()` reads `experiments/<id>.json` for the run ids, then per run the artifacts the core
writes (RunLayout): the loss history (`training-history.json`, or the newest checkpoint's
`trainer_state.json` while a run is unfinished), checkpoint and resume events (`events.jsonl`), the
training summary and the `eval-<split>.json` files. It draws one loss curve per run with checkpoint and
resume markers, a runs × metrics table, and, when the experiment's statistics are on disk
(`experiments/<id>.summary.json`), each run's and each configuration's 95% interval. A run with missing or unreadable artifacts gets a row that
says what state it is in; it never stops the report.

A search (`experiments/<id>.search.json` beside the record) is reported by its trials instead of its template
run, which never trains: a leaderboard, the rung ladder (objective against steps, one line per trial, from
each trial's `rungs/step-<N>.json`) and each searched parameter against the objective.
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
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bert_eval.core.records import EvalResult, ExperimentSummary, TrainingSummary
from bert_eval.core.search.asha import TrialState
from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.core.storage.fsutil import atomic_write_text
from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout, experiment_file
from bert_eval.search import leaderboard
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
tr.winner td { background: #fff3d6; } tr.stopped td, tr.failed td { color: #777; }
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
    run_ids = _experiment_run_ids(runs_dir, experiment_id)
    search, search_problem = _read_search(runs_dir, experiment_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    search_html = f'<p class="meta">{html.escape(search_problem)}</p>' if search_problem else ""
    if search is not None:
        # The template run never trains: the search's runs are its trials.
        records = [_trial_run(runs_dir, trial) for trial in sorted(search.trials, key=lambda t: t.trial)]
        search_html = _search_section(runs_dir, search, out_dir)
    else:
        records = [collect_run(runs_dir, run_id) for run_id in run_ids]

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
        f"{search_html}"
        f"<h2>Metrics</h2>{_table(records)}"
        f"{_summary_tables(runs_dir, experiment_id)}"
        f"<h2>Loss curves</h2>{note}{''.join(sections)}"
        "</body></html>\n"
    )
    report = out_dir / "report.html"
    atomic_write_text(report, document)
    report.chmod(0o644)  # a page to share; the temporary file it was renamed from was private
    return report


def _trial_run(runs_dir: Path, trial: SearchTrialRecord) -> RunRecord:
    """A search trial's run, its state said the way the search decided it."""
    record = collect_run(runs_dir, trial.run_id)
    if trial.state is TrialState.stopped:
        record.state = f"stopped by the search at step {trial.steps}"
    elif trial.state is TrialState.paused:
        record.state = f"paused at step {trial.steps}, waiting for the search to promote it"
    elif trial.state is TrialState.failed:
        record.state = "failed" + (f": {trial.error}" if trial.error else "")
    return record


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


# --------------------------------------------------------------------------- search


class SearchTrialRecord(BaseModel):
    """One trial as `experiments/<id>.search.json` records it (the temporal layer's `SearchTrial`, read
    here without importing that layer)."""

    model_config = ConfigDict(extra="ignore")

    trial: int
    run_id: str
    params: dict[str, float | int]
    rung: int  # the highest rung reached (0-based; -1: none yet)
    steps: int  # the steps it trained to
    state: TrialState
    objective: float | None = None
    objectives: list[float | None] = []
    metrics: dict[str, float] | None = None
    train_seconds: float = 0.0
    error: str | None = None

    @field_validator("run_id")
    @classmethod
    def _canonical(cls, run_id: str) -> str:
        if normalize_id(run_id) != run_id:  # it becomes a path below
            raise ValueError(f"run_id {run_id!r} is not canonical")
        return run_id


class SearchRecord(BaseModel):
    """`experiments/<id>.search.json`: the search's outcome so far (the temporal layer's `SearchOutcome`)."""

    model_config = ConfigDict(extra="ignore")

    experiment_id: str
    metric: str
    maximize: bool
    rungs: list[int]
    trials: list[SearchTrialRecord]
    best: str | None = None
    promotions: list[str] = []
    finished: bool = False


def _read_search(runs_dir: Path, experiment_id: str) -> tuple[SearchRecord | None, str | None]:
    """The search's record, or None for a plain experiment; a record that cannot be read gives a problem."""
    path = experiment_file(runs_dir, experiment_id).with_name(f"{experiment_id}.search.json")
    try:
        return SearchRecord.model_validate_json(path.read_text()), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValidationError) as exc:
        return None, f"{path.name} unreadable ({exc.__class__.__name__}): the search's trials are not shown"


def _rung_points(runs_dir: Path, search: SearchRecord, trial: SearchTrialRecord) -> list[tuple[int, float | None]]:
    """(step, objective) of each rung the trial reached. The steps are those of its `rungs/step-<N>.json`
    (a trial with another budget than the template's has other rungs); without them, the template's rungs
    and the trial's own last step."""
    names = [p.stem.removeprefix("step-") for p in (RunLayout(runs_dir, trial.run_id).root / "rungs").glob("step-*.json")]
    recorded = sorted(int(n) for n in names if n.isdigit())
    points: list[tuple[int, float | None]] = []
    for rung, objective in enumerate(trial.objectives):
        if rung < len(recorded):
            step = recorded[rung]
        elif rung == trial.rung:
            step = trial.steps
        elif rung < len(search.rungs):
            step = search.rungs[rung]
        else:
            continue
        points.append((step, objective))
    return points


def _param_name(path: str) -> str:
    return path.removeprefix("train.")


def _searched_params(search: SearchRecord) -> list[str]:
    return list(dict.fromkeys(name for trial in search.trials for name in trial.params))


def _measured(search: SearchRecord, name: str) -> list[tuple[SearchTrialRecord, float, float]]:
    """(trial, its value of `name`, its objective at its highest rung) for each trial with that objective."""
    return [(t, float(t.params[name]), t.objective) for t in search.trials if t.objective is not None and name in t.params]


def _log_scale(search: SearchRecord, name: str) -> bool:
    """Learning-rate-like parameters: positive values spanning more than a factor of 10."""
    values = [x for _, x, _ in _measured(search, name)]
    return bool(values) and min(values) > 0 and max(values) > 10 * min(values)


_STOPPED_GREY = "#8c8c8c"
_FAILED_RED = "#d62728"
_WINNER_GOLD = "#ff7f0e"


def _rung_ladder_png(search: SearchRecord, points: dict[str, list[tuple[int, float | None]]]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(7.5, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for step in search.rungs:
        axes.axvline(step, color="#cccccc", linestyle=":", linewidth=1)
    legend: dict[str, Line2D] = {}  # one entry per kind of line drawn, in drawing order
    others = 0
    # The winner last, on top of the others.
    for trial in sorted(search.trials, key=lambda t: t.run_id == search.best):
        measured = [(s, o) for s, o in points[trial.run_id] if o is not None]
        if not measured:
            continue
        steps, objectives = zip(*measured, strict=True)
        last = (steps[-1], objectives[-1])
        if trial.run_id == search.best:
            axes.plot(steps, objectives, color=_WINNER_GOLD, linewidth=3.2, marker="o", zorder=6)
            axes.plot(*last, color=_WINNER_GOLD, marker="*", markersize=18, markeredgecolor="black", linestyle="", zorder=7)
            legend[f"winner (trial {trial.trial})"] = Line2D([], [], color=_WINNER_GOLD, linewidth=3.2, marker="*", markersize=12, markeredgecolor="black")
        elif trial.state is TrialState.stopped:
            axes.plot(steps, objectives, color=_STOPPED_GREY, alpha=0.7, linewidth=1, marker=".", zorder=2)
            axes.plot(*last, color=_STOPPED_GREY, marker="x", markersize=8, markeredgewidth=2, linestyle="", zorder=3)
            legend["stopped (× at its last rung)"] = Line2D([], [], color=_STOPPED_GREY, marker="x", markeredgewidth=2)
        elif trial.state is TrialState.failed:
            axes.plot(steps, objectives, color=_FAILED_RED, alpha=0.7, linewidth=1, linestyle="--", marker=".", zorder=2)
            axes.plot(*last, color=_FAILED_RED, marker="v", markersize=7, linestyle="", zorder=3)
            legend["failed (▼ at its last result)"] = Line2D([], [], color=_FAILED_RED, linestyle="--", marker="v")
        else:  # completed, or still running / paused: a colour each (not the winner's orange, C1)
            color = f"C{(0, 2, 3, 4, 5, 6, 8, 9)[others % 8]}"
            others += 1
            done = trial.state is TrialState.completed
            marker, fill = ("o", color) if done else (".", "white")
            axes.plot(steps, objectives, color=color, linewidth=1.6, marker=marker, markerfacecolor=fill, zorder=4)
            label = "completed" if done else "running / paused"
            legend[label] = Line2D([], [], color="C0", linewidth=1.6, marker=marker, markerfacecolor="C0" if done else "white")
    axes.margins(x=0.06, y=0.1)
    if search.rungs:
        if search.rungs[-1] > 10 * search.rungs[0]:
            axes.set_xscale("log")  # rungs grow geometrically: evenly spaced on a log axis
        axes.set_xticks(search.rungs, [str(step) for step in search.rungs])
        axes.minorticks_off()
    axes.set_title(f"{search.experiment_id}: rung ladder")
    axes.set_xlabel("optimizer step (rungs dotted)")
    axes.set_ylabel(f"{search.metric} on the search slice ({'higher' if search.maximize else 'lower'} is better)")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(handles=list(legend.values()), labels=list(legend), loc="best", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _params_png(search: SearchRecord) -> bytes:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm
    from matplotlib.figure import Figure

    names = _searched_params(search)
    top = max((t.rung for t in search.trials if t.objective is not None), default=0)
    colors = colormaps["viridis"].resampled(top + 1)
    norm = BoundaryNorm([r - 0.5 for r in range(top + 2)], colors.N)
    columns = min(len(names), 3)
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(3.6 * columns + 1.0, 3.2 * rows), dpi=100)
    FigureCanvasAgg(figure)
    scatter = None
    first = None
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1, sharey=first)
        first = first or axes
        measured = _measured(search, name)
        xs, ys, reached = [x for _, x, _ in measured], [y for _, _, y in measured], [t.rung for t, _, _ in measured]
        scatter = axes.scatter(xs, ys, c=reached, cmap=colors, norm=norm, s=36, edgecolors="black", linewidths=0.4, zorder=3)
        for trial, x, y in measured:
            if trial.run_id == search.best:
                axes.scatter([x], [y], marker="*", s=260, facecolors="none", edgecolors=_WINNER_GOLD, linewidths=2, zorder=4)
        log = _log_scale(search, name)
        if log:
            axes.set_xscale("log")
        axes.set_xlabel(_param_name(name) + (" (log)" if log else ""))
        if index % columns == 0:
            axes.set_ylabel(search.metric)
        else:
            axes.tick_params(labelleft=False)
        axes.margins(x=0.08, y=0.12)
        axes.grid(alpha=0.3)
    if scatter is not None:
        bar = figure.colorbar(scatter, ax=figure.axes, ticks=list(range(top + 1)), fraction=0.04, pad=0.02)
        bar.ax.set_yticklabels([f"{r} ({search.rungs[r]} steps)" if r < len(search.rungs) else str(r) for r in range(top + 1)])
        bar.set_label("rung reached")
    figure.suptitle(f"{search.experiment_id}: {search.metric} at each trial's highest rung")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _param_cell(value: float | int | None) -> str:
    if value is None:
        return "<td>—</td>"
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f'<td title="{html.escape(repr(value))}">{shown}</td>'


def _leaderboard(search: SearchRecord, points: dict[str, list[tuple[int, float | None]]]) -> str:
    params = _searched_params(search)
    final = list(dict.fromkeys(name for trial in search.trials for name in trial.metrics or {}))
    headers = [
        "rank", "trial", "run", *(_param_name(p) for p in params), "rung (steps)", search.metric,
        f"{search.metric} per rung (steps)", "state", *(f"final {m}" for m in final), "train time (s)",
    ]  # fmt: skip
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for rank, trial in enumerate(leaderboard(search.trials, maximize=search.maximize), start=1):
        winner = trial.run_id == search.best
        ladder = " → ".join(f"{'failed' if o is None else f'{o:.4f}'} ({s})" for s, o in points[trial.run_id])
        state = trial.state.value + (f": {trial.error}" if trial.error else "")
        cells = [
            f"<td>{rank}</td>",
            f'<td class="run">{"★ " if winner else ""}{trial.trial}</td>',
            f'<td class="run">{html.escape(trial.run_id)}</td>',
            *(_param_cell(trial.params.get(p)) for p in params),
            f"<td>{trial.rung} ({trial.steps})</td>" if trial.rung >= 0 else "<td>—</td>",
            _cell(trial.objective, digits=4, best=winner),
            f'<td class="run">{html.escape(ladder) or "—"}</td>',
            f'<td class="state">{html.escape(state)}</td>',
            *(_cell((trial.metrics or {}).get(m), digits=4) for m in final),
            _cell(trial.train_seconds, digits=1),
        ]
        row_class = f' class="winner {trial.state.value}"' if winner else f' class="{trial.state.value}"'
        body.append(f'<tr id="trial-{html.escape(trial.run_id)}"{row_class}>{"".join(cells)}</tr>')
    return f'<table class="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _search_section(runs_dir: Path, search: SearchRecord, out_dir: Path) -> str:
    """The leaderboard and the two figures (PNGs embedded, and written beside the page)."""
    points = {t.run_id: _rung_points(runs_dir, search, t) for t in search.trials}
    counts = {state: sum(t.state is state for t in search.trials) for state in TrialState}
    winner = next((t for t in search.trials if t.run_id == search.best), None)
    direction = "higher" if search.maximize else "lower"
    verdict = (
        f"winner: trial {winner.trial} ({html.escape(winner.run_id)}), {html.escape(search.metric)} "
        f"{'—' if winner.objective is None else f'{winner.objective:.4f}'} at {winner.steps} steps"
        if winner is not None
        else ("no trial completed" if search.finished else "no winner yet (the search is in progress)")
    )
    meta = (
        f'<p class="meta">{len(search.trials)} trials ('
        + ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
        + f"); objective {html.escape(search.metric)} on the held-out search slice ({direction} is better); rungs at steps "
        + (", ".join(str(s) for s in search.rungs) or "—")
        + f"; {len(search.promotions)} promotions; {'finished' if search.finished else 'in progress'}. <b>{verdict}</b>. "
        "Ranked by the highest rung reached, then the objective there; ★ marks the winner (the best trial trained "
        "to its full budget); final metrics are those of the experiment's eval split, for completed trials.</p>"
    )
    logs = [_param_name(name) for name in _searched_params(search) if _log_scale(search, name)]
    figures = []
    if any(o is not None for ladder in points.values() for _, o in ladder) and _searched_params(search):
        for name, alt, png, caption in (
            (
                "rung-ladder.png",
                "rung ladder",
                _rung_ladder_png(search, points),
                "Each trial's objective at every rung it reached. Stopped trials are grey with × at the rung where "
                "the search stopped them; failed trials dashed red; the winner thick orange with ★.",
            ),
            (
                "params-vs-objective.png",
                "searched parameters against the objective",
                _params_png(search),
                "Each trial's objective at its highest rung against each searched parameter, coloured by the rung "
                "reached: objectives at higher rungs come from more training, so compare points of one colour. "
                + (f"log axis: {', '.join(logs)}." if logs else "No parameter spans more than 10×: linear axes."),
            ),
        ):
            (out_dir / name).write_bytes(png)
            data = base64.b64encode(png).decode("ascii")
            section_id = name.removesuffix(".png")
            figures.append(
                f'<section id="{section_id}"><h3>{html.escape(alt[0].upper() + alt[1:])}</h3>'
                f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
                f'<p class="caption">{html.escape(caption)}</p></section>'
            )
    else:
        figures.append('<p class="meta">No trial has an objective yet: no figures.</p>')
    return f'<h2>Search: {len(search.trials)} trials</h2>{meta}{_leaderboard(search, points)}{"".join(figures)}'


# --------------------------------------------------------------------------- CLI


def report_command(
    experiment_id: Annotated[str, typer.Argument(help="experiment id, as submitted")],
    out: Annotated[
        Path | None, typer.Option("--out", help="output directory [default: reports/<experiment_id>]")
    ] = None,
) -> None:
    """Write an HTML report: loss curves with checkpoint/resume markers and a metrics table (for a search,
    also its leaderboard, rung ladder and each parameter against the objective)."""
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
