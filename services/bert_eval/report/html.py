"""The report page: figures embedded as PNG data, tables, the stylesheet; `write_report()` puts it together.

The page reads top down: the verdict (for a search, its leaderboard), the configurations' and the runs'
intervals as forest plots, the loss curves, then the tables. The figures are also written beside the page.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass
from pathlib import Path

from bert_eval.core.records import ExperimentSummary
from bert_eval.core.search.asha import TrialState
from bert_eval.core.search.outcome import SearchOutcome
from bert_eval.core.storage.fsutil import atomic_write_text
from bert_eval.report import figures
from bert_eval.report.collect import (
    ExperimentRecords,
    RunRecord,
    collect_experiment,
    log_scale,
    param_name,
    searched_params,
)
from bert_eval.search import leaderboard
from bert_eval.spec import higher_is_better

__all__ = ["write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 80rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } td.run, td.state { text-align: left; }
td.best { font-weight: bold; }
tr.winner td { background: #fff3d6; } tr.stopped td, tr.failed td { color: #777; }
section { margin: 1.5rem 0; } p.caption, p.meta { color: #555; font-size: 0.9rem; max-width: 60rem; }
img { max-width: 100%; height: auto; }
details > summary { cursor: pointer; color: #555; }
"""


@dataclass(frozen=True)
class _Figure:
    file: str  # written beside the page; the section's id is its stem
    alt: str
    png: bytes
    caption: str


def _section(figure: _Figure, out_dir: Path) -> str:
    (out_dir / figure.file).write_bytes(figure.png)
    data = base64.b64encode(figure.png).decode("ascii")
    title = figure.alt[0].upper() + figure.alt[1:]
    return (
        f'<section id="{html.escape(figure.file.removesuffix(".png"))}"><h3>{html.escape(title)}</h3>'
        f'<img alt="{html.escape(figure.alt)}" src="data:image/png;base64,{data}">'
        f'<p class="caption">{html.escape(figure.caption)}</p></section>'
    )


# --------------------------------------------------------------------------- tables


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


def _best(values: list[float | int | None], *, higher: bool) -> float | int | None:
    present = [v for v in values if v is not None]
    if len(set(present)) < 2:  # one value, or all equal: nothing stands out
        return None
    return max(present) if higher else min(present)


def _metrics_table(records: list[RunRecord]) -> str:
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
    # Each metric column in its own direction; the final training loss is better lower.
    ranked: dict[int, bool] = {i: higher_is_better(metric) for i, (_, metric, _) in enumerate(columns)}
    ranked[len(columns) + 1] = False
    best = [
        _best([row[i] for row in rows_values], higher=ranked[i]) if i in ranked else None for i in range(len(headers))
    ]
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


def _interval(low: float | None, high: float | None) -> str:
    return f"[{low:.4f}, {high:.4f}]" if low is not None and high is not None else "–"


def _summary_tables(summary: ExperimentSummary) -> str:
    """Intervals per configuration and per run, as tables (the forest plots show the same numbers)."""
    runs = "".join(
        f"<tr><td>{html.escape(r.run_id)}</td><td>{html.escape(r.config)}</td><td>{html.escape(r.metric)}</td>"
        f"<td>{r.value:.4f}</td><td>{_interval(r.low, r.high)}</td></tr>"
        for r in summary.runs
    )
    configs = "".join(
        f"<tr><td>{html.escape(c.config)}</td><td>{c.n}</td><td>{html.escape(c.metric)}</td><td>{c.mean:.4f}</td>"
        f"<td>{'' if c.std is None else f'{c.std:.4f}'}</td><td>{_interval(c.low, c.high)}</td>"
        f"<td>{c.min:.4f} / {c.max:.4f}</td><td>{html.escape(c.mark or '')}</td></tr>"
        for c in summary.configs
    )
    heads = ("config", "seeds", "metric", "mean", "std", "95% CI of the mean", "min / max", "vs best")
    head = "".join(f"<th>{h}</th>" for h in heads)
    return _matrix_table(summary) + (
        f"<h3>Configurations on {html.escape(summary.split)}</h3>"
        f'<table class="metrics configs"><thead><tr>{head}</tr></thead><tbody>{configs}</tbody></table>'
        "<h3>Runs: 95% bootstrap interval over evaluation examples</h3>"
        '<table class="metrics"><thead><tr><th>run</th><th>config</th><th>metric</th><th>value</th><th>95% CI</th></tr>'
        f"</thead><tbody>{runs}</tbody></table>"
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
        f"<tr><td>{html.escape(run_id)}</td>"
        + "".join(f"<td>{html.escape(cells.get(c, '–'))}</td>" for c in columns)
        + "</tr>"
        for run_id, cells in rows.items()
    )
    return (
        "<h3>Evaluation matrix: models × evaluation sets (95% bootstrap interval)</h3>"
        f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _param_cell(value: float | int | None) -> str:
    if value is None:
        return "<td>—</td>"
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f'<td title="{html.escape(repr(value))}">{shown}</td>'


def _leaderboard(search: SearchOutcome, points: dict[str, list[tuple[int, float | None]]]) -> str:
    params = searched_params(search)
    final = list(dict.fromkeys(name for trial in search.trials for name in trial.metrics or {}))
    headers = [
        "rank",
        "trial",
        "run",
        *(param_name(p) for p in params),
        "rung (steps)",
        search.metric,
        f"{search.metric} per rung (steps)",
        "state",
        *(f"final {m}" for m in final),
        "train time (s)",
    ]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for rank, trial in enumerate(leaderboard(search.trials, maximize=search.maximize), start=1):
        winner = trial.run_id == search.best
        ladder = " → ".join(f"{'failed' if o is None else f'{o:.4f}'} ({s})" for s, o in points.get(trial.run_id, []))
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


# --------------------------------------------------------------------------- sections


def _search_section(experiment: ExperimentRecords, out_dir: Path) -> str:
    """The verdict, the leaderboard and the search's three figures."""
    search = experiment.search
    assert search is not None
    points = experiment.rung_points
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
        + f"); objective {html.escape(search.metric)} on the held-out search slice ({direction} is better); "
        + "rungs at steps "
        + (", ".join(str(s) for s in search.rungs) or "—")
        + f"; {len(search.promotions)} promotions; {'finished' if search.finished else 'in progress'}. "
        + f"<b>{verdict}</b>. Ranked by the highest rung reached, then the objective there; ★ marks the winner "
        "(the best trial trained to its full budget); final metrics are those of the experiment's eval split, "
        "for completed trials.</p>"
    )
    logs = [param_name(name) for name in searched_params(search) if log_scale(search, name)]
    sections = []
    if any(r.losses for r in experiment.runs):
        sections.append(
            _Figure(
                "trial-curves.png",
                "training loss of every trial",
                figures.trial_curves_png(search, experiment.runs),
                "Every trial's training loss, coloured by the highest rung it reached (the search stopped the others "
                "earlier); the winner bold orange, failed trials dashed red.",
            )
        )
    if any(o is not None for ladder in points.values() for _, o in ladder) and searched_params(search):
        sections.append(
            _Figure(
                "rung-ladder.png",
                "rung ladder",
                figures.rung_ladder_png(search, points),
                "Each trial's objective at every rung it reached. Stopped trials are grey with × at the rung where "
                "the search stopped them; failed trials dashed red; the winner thick orange with ★.",
            )
        )
        sections.append(
            _Figure(
                "params-vs-objective.png",
                "searched parameters against the objective",
                figures.params_png(search),
                "Each trial's objective at its highest rung against each searched parameter, coloured by the rung "
                "reached: objectives at higher rungs come from more training, so compare points of one colour. "
                + (f"log axis: {', '.join(logs)}." if logs else "No parameter spans more than 10×: linear axes."),
            )
        )
    else:
        return f"<h2>Search: {len(search.trials)} trials</h2>{meta}{_leaderboard(search, points)}" + (
            '<p class="meta">No trial has an objective yet: no rung figures.</p>'
            + "".join(_section(f, out_dir) for f in sections)
        )
    return f"<h2>Search: {len(search.trials)} trials</h2>{meta}{_leaderboard(search, points)}" + "".join(
        _section(f, out_dir) for f in sections
    )


def _decision_figures(experiment: ExperimentRecords) -> list[_Figure]:
    """The forest plots (from the statistics, when there are any) and, for a plain experiment, the loss curves
    overlaid by configuration."""
    found: list[_Figure] = []
    summary = experiment.summary
    if summary is not None and summary.configs:
        found.append(
            _Figure(
                "configs-forest.png",
                "configurations: mean and 95% interval",
                figures.config_forest_png(summary),
                "Each configuration's mean over its seeds with the 95% t-interval of the mean (| marks the lowest and "
                "highest seed). ★ orange: the best configuration; blue: not significantly worse than it (one-sided "
                "Welch t-test, p ≥ 0.05); grey: significantly worse, or untested.",
            )
        )
    if summary is not None and summary.runs:
        found.append(
            _Figure(
                "runs-forest.png",
                "runs: 95% intervals",
                figures.run_forest_png(summary),
                "Each run's metric with its 95% bootstrap interval over the evaluation examples, grouped by "
                "configuration and coloured as its configuration is above.",
            )
        )
    if experiment.search is None and any(r.losses for r in experiment.runs):
        found.append(
            _Figure(
                "loss-by-config.png",
                "training loss by configuration",
                figures.loss_by_config_png(
                    experiment.runs, experiment.config_of, title=f"{experiment.experiment_id}: training loss"
                ),
                "A colour per configuration: each seed a thin line, the mean over its seeds bold (on the steps all its "
                "seeds logged).",
            )
        )
    return found


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
    return "; ".join(parts)


def _per_run_sections(records: list[RunRecord], out_dir: Path) -> str:
    """One loss chart per run, with its checkpoints and resumes (on request)."""
    sections = []
    for record in records:
        if not record.losses:
            continue
        figure = _Figure(
            f"loss-{record.run_id}.png",
            f"training loss of {record.run_id}",
            figures.run_loss_png(record),
            _caption(record),
        )
        sections.append(_section(figure, out_dir).replace('id="loss-', 'id="run-', 1))
    return "".join(sections)


def write_report(runs_dir: Path, experiment_id: str, out_dir: Path, *, per_run_charts: bool = False) -> Path:
    """Write the experiment's report page, its figures embedded, and the figures as PNGs beside it.

    Args:
        runs_dir: the runs directory the workers write to.
        experiment_id: a canonical experiment id (`experiments/<id>.json` must exist).
        out_dir: where `report.html` and the PNGs go (created if missing).
        per_run_charts: also draw one loss chart per run, with its checkpoint and resume markers.

    Returns:
        The path of `report.html`.

    Raises:
        ReportError: the experiment is unknown in `runs_dir`.
    """
    out_dir = Path(out_dir)
    experiment = collect_experiment(runs_dir, experiment_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = experiment.runs

    search_html = f'<p class="meta">{html.escape(experiment.search_problem)}</p>' if experiment.search_problem else ""
    if experiment.search is not None:
        search_html = _search_section(experiment, out_dir)
    decisions = "".join(_section(f, out_dir) for f in _decision_figures(experiment))
    without_curve = [r.run_id for r in records if not r.losses]
    note = f'<p class="meta">No loss history for: {html.escape(", ".join(without_curve))}.</p>' if without_curve else ""
    if per_run_charts:
        per_run = f"<h2>Loss curves, run by run</h2>{_per_run_sections(records, out_dir)}"
    else:
        per_run = (
            '<p class="meta">One chart per run, with its checkpoints and resumes: '
            "<code>bert-eval report --per-run</code>.</p>"
        )
    summary = _summary_tables(experiment.summary) if experiment.summary is not None else ""
    title = f"bert-eval report: {experiment_id}"
    document = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="meta">{len(records)} runs from {html.escape(str(runs_dir))}; '
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Bold: best value in its column. "
        "Wall time runs from the first training attempt's start to completion, recovery included.</p>"
        f"{search_html}" + (f"<h2>Decisions</h2>{decisions}" if decisions else "") + f"{note}{per_run}"
        f"<h2>Metrics</h2>{_metrics_table(records)}"
        f"{summary}"
        "</body></html>\n"
    )
    report = out_dir / "report.html"
    atomic_write_text(report, document)
    report.chmod(0o644)  # a page to share; the temporary file it was renamed from was private
    return report
