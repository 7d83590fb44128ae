"""The report's figures, each drawn from records into PNG bytes (matplotlib's Agg canvas, no display).

Their number does not grow with the number of runs or trials: a forest plot of configurations and one of
runs, the loss curves of all runs overlaid by configuration, and for a search the loss curves of all trials
coloured by the rung each reached, the rung ladder and each searched parameter against the objective. One
chart per run is drawn only on request (`run_loss_png`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_eval.core.records import ExperimentSummary
from bert_eval.core.search.asha import TrialState
from bert_eval.core.search.outcome import SearchOutcome
from bert_eval.report.collect import RunRecord, log_scale, measured, param_name, searched_params

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "config_forest_png",
    "loss_by_config_png",
    "params_png",
    "rung_ladder_png",
    "run_forest_png",
    "run_loss_png",
    "trial_curves_png",
]

STOPPED_GREY = "#8c8c8c"
FAILED_RED = "#d62728"
WINNER_GOLD = "#ff7f0e"
# Forest plots: the best configuration, those not significantly worse than it, and the rest.
BEST_COLOUR = "#ff7f0e"
NOT_WORSE_COLOUR = "#1f77b4"
WORSE_COLOUR = "#8c8c8c"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure, *, tight: bool = False) -> bytes:
    buffer = io.BytesIO()
    if tight:
        figure.savefig(buffer, format="png", bbox_inches="tight")
    else:
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def log_ticks(axes: Axes, axis: str = "x") -> None:
    """A log axis whose labels do not overlap: ticks at 1, 2 and 5 times each power of ten (at most six),
    short labels (`3e-04`), no labels on minor ticks, slanted when they would still crowd."""
    from matplotlib import ticker

    target = axes.xaxis if axis == "x" else axes.yaxis
    low, high = sorted(axes.get_xlim() if axis == "x" else axes.get_ylim())
    decades = math.log10(high / low) if low > 0 else 0.0
    # 1, 2 and 5 times each power of ten over a span of two decades or less; beyond, powers of ten only.
    subs = (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    target.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=6))
    target.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(1, 10)), numticks=12))
    target.set_major_formatter(
        ticker.FuncFormatter(lambda value, _: f"{value:.0e}" if value < 0.01 or value >= 1e4 else f"{value:g}")
    )
    target.set_minor_formatter(ticker.NullFormatter())
    if axis == "x":
        axes.tick_params(axis="x", labelrotation=35)
        for label in axes.get_xticklabels():
            label.set_horizontalalignment("right")


# --------------------------------------------------------------------------- forest plots


def _mark_colour(mark: str | None) -> str:
    return {"best": BEST_COLOUR, "not significantly worse": NOT_WORSE_COLOUR}.get(mark or "", WORSE_COLOUR)


def config_forest_png(summary: ExperimentSummary) -> bytes:
    """Each configuration's mean over seeds with its 95% t-interval, best first (the order of the statistics'
    table), the best configuration in orange with a star, those not significantly worse than it in blue, the
    others grey; the best mean as a dashed line."""
    from matplotlib.lines import Line2D

    configs = summary.configs
    figure = _figure(8.0, 1.4 + 0.32 * len(configs))
    axes = figure.add_subplot()
    rows = np.arange(len(configs))[::-1]
    for row, config in zip(rows, configs, strict=True):
        colour = _mark_colour(config.mark)
        if config.low is not None and config.high is not None:
            axes.hlines(row, config.low, config.high, color=colour, linewidth=2.4)
        axes.plot(
            [config.mean],
            [row],
            marker="*" if config.mark == "best" else "o",
            markersize=14 if config.mark == "best" else 7,
            color=colour,
            markeredgecolor="black",
            markeredgewidth=0.6,
            linestyle="",
            zorder=3,
        )
        axes.plot([config.min, config.max], [row, row], marker="|", markersize=9, color=colour, linestyle="", alpha=0.6)
    best = next((c for c in configs if c.mark == "best"), None)
    if best is not None:
        axes.axvline(best.mean, color=BEST_COLOUR, linestyle="--", linewidth=1, alpha=0.7)
    axes.set_yticks(rows, [f"{c.config} (n={c.n})" for c in configs])
    axes.set_ylim(-0.7, len(configs) - 0.3)
    metric = configs[0].metric if configs else ""
    axes.set_xlabel(f"{metric} on {summary.split}: mean over seeds, 95% t-interval; | marks min and max")
    axes.grid(alpha=0.3, axis="x")
    legend = [
        Line2D([], [], color=BEST_COLOUR, marker="*", markersize=12, markeredgecolor="black", label="best"),
        Line2D([], [], color=NOT_WORSE_COLOUR, marker="o", label="not significantly worse"),
        Line2D([], [], color=WORSE_COLOUR, marker="o", label="significantly worse / untested"),
    ]
    axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    axes.set_title(f"configurations on {summary.split}")
    return _png(figure, tight=True)


def run_forest_png(summary: ExperimentSummary) -> bytes:
    """Each run's metric with its 95% bootstrap interval over the evaluation examples, grouped by configuration
    (the statistics' order), coloured as its configuration is in the configurations' forest plot."""
    marks = {c.config: c.mark for c in summary.configs}
    order = {c.config: index for index, c in enumerate(summary.configs)}
    runs = sorted(summary.runs, key=lambda r: (order.get(r.config, len(order)), r.run_id))
    figure = _figure(8.0, 1.2 + 0.22 * len(runs))
    axes = figure.add_subplot()
    rows = np.arange(len(runs))[::-1]
    for row, run in zip(rows, runs, strict=True):
        colour = _mark_colour(marks.get(run.config))
        if run.low is not None and run.high is not None:
            axes.hlines(row, run.low, run.high, color=colour, linewidth=1.8)
        axes.plot([run.value], [row], marker="o", markersize=5, color=colour, linestyle="", zorder=3)
    axes.set_yticks(
        rows, [f"{r.run_id} [{r.config}]" if r.config != r.run_id else r.run_id for r in runs], fontsize="small"
    )
    axes.set_ylim(-0.7, len(runs) - 0.3)
    metric = runs[0].metric if runs else ""
    axes.set_xlabel(f"{metric} on {summary.split}: each run's 95% bootstrap interval over examples")
    axes.grid(alpha=0.3, axis="x")
    axes.set_title("runs, by configuration")
    return _png(figure, tight=True)


# --------------------------------------------------------------------------- loss curves


def _mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The pointwise mean of several loss curves on the steps all of them cover (each interpolated)."""
    usable = [sorted(c) for c in curves if len(c) >= 1]
    if not usable:
        return None
    start = max(c[0][0] for c in usable)
    end = min(c[-1][0] for c in usable)
    steps = np.array(sorted({s for c in usable for s, _ in c if start <= s <= end}), dtype=float)
    if steps.size == 0:
        return None
    values = [np.interp(steps, [s for s, _ in c], [v for _, v in c]) for c in usable]
    return steps, np.mean(values, axis=0)


def loss_by_config_png(records: Sequence[RunRecord], config_of: Any, *, title: str) -> bytes:
    """All runs' training loss on one axes, a colour per configuration: each seed a thin line, the
    configuration's mean over its seeds bold. `config_of(run_id)` names a run's configuration."""
    from matplotlib import colormaps

    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.losses:
            groups.setdefault(config_of(record.run_id), []).append(record)
    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"]
    figure = _figure(8.0, 4.4)
    axes = figure.add_subplot()
    for index, (config, members) in enumerate(groups.items()):
        colour = palette(index % palette.N)
        for record in members:
            steps, losses = zip(*record.losses, strict=True)
            axes.plot(steps, losses, color=colour, linewidth=0.8, alpha=0.45)
        mean = _mean_curve([r.losses for r in members])
        if mean is not None:
            label = f"{config} (mean of {len(members)})" if len(members) > 1 else config
            axes.plot(*mean, color=colour, linewidth=2.6, label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    if 0 < len(groups) <= 20:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    axes.set_title(title)
    return _png(figure, tight=True)


def _rung_colours(search: SearchOutcome) -> tuple[Any, Any, int]:
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm

    top = max((t.rung for t in search.trials), default=0)
    top = max(top, 0)
    colours = colormaps["viridis"].resampled(top + 1)
    return colours, BoundaryNorm([r - 0.5 for r in range(top + 2)], colours.N), top


def _rung_colourbar(figure: Figure, mappable: Any, search: SearchOutcome, top: int, axes: Any) -> None:
    bar = figure.colorbar(mappable, ax=axes, ticks=list(range(top + 1)), fraction=0.04, pad=0.02)
    bar.ax.set_yticklabels(
        [f"{r} ({search.rungs[r]} steps)" if r < len(search.rungs) else str(r) for r in range(top + 1)]
    )
    bar.set_label("rung reached")


def trial_curves_png(search: SearchOutcome, records: Sequence[RunRecord]) -> bytes:
    """Every trial's training loss on one axes, coloured by the rung it reached (thin, translucent: a hundred
    trials stay readable); failed trials dashed red, the winner bold orange on top."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D

    colours, norm, top = _rung_colours(search)
    losses = {r.run_id: r.losses for r in records if r.losses}
    figure = _figure(8.5, 4.6)
    axes = figure.add_subplot()
    width = 1.2 if len(losses) <= 20 else 0.7
    alpha = 0.8 if len(losses) <= 20 else 0.45
    for trial in sorted(search.trials, key=lambda t: (t.run_id == search.best, t.rung)):
        if trial.run_id not in losses:
            continue
        steps, values = zip(*losses[trial.run_id], strict=True)
        if trial.run_id == search.best:
            axes.plot(steps, values, color=WINNER_GOLD, linewidth=2.8, zorder=5)
        elif trial.state is TrialState.failed:
            axes.plot(steps, values, color=FAILED_RED, linewidth=width, linestyle="--", alpha=alpha)
        else:
            axes.plot(steps, values, color=colours(norm(max(trial.rung, 0))), linewidth=width, alpha=alpha)
    for step in search.rungs:
        axes.axvline(step, color="#cccccc", linestyle=":", linewidth=1)
    _rung_colourbar(figure, ScalarMappable(norm=norm, cmap=colours), search, top, axes)
    handles = [Line2D([], [], color=WINNER_GOLD, linewidth=2.8, label="winner")]
    if any(t.state is TrialState.failed for t in search.trials):
        handles.append(Line2D([], [], color=FAILED_RED, linestyle="--", label="failed"))
    axes.legend(handles=handles, loc="upper right", fontsize="small")
    axes.set_xlabel("optimizer step (rungs dotted)")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    axes.set_title(f"{search.experiment_id}: training loss of {len(losses)} trials, by rung reached")
    return _png(figure, tight=True)


def run_loss_png(record: RunRecord) -> bytes:
    """One run's training loss with its checkpoints (dotted) and resumes (dashed red, the steps redone
    shaded): the per-run chart, drawn on request."""
    figure = _figure(7.0, 3.6)
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
    return _png(figure)


# --------------------------------------------------------------------------- search


def rung_ladder_png(search: SearchOutcome, points: dict[str, list[tuple[int, float | None]]]) -> bytes:
    """Each trial's objective at every rung it reached: stopped trials grey with × at their last rung, failed
    ones dashed red, the winner thick orange with ★; thinner lines when there are many trials."""
    from matplotlib.lines import Line2D

    many = len(search.trials) > 30
    figure = _figure(8.0, 4.4)
    axes = figure.add_subplot()
    for step in search.rungs:
        axes.axvline(step, color="#cccccc", linestyle=":", linewidth=1)
    legend: dict[str, Line2D] = {}  # one entry per kind of line drawn, in drawing order
    others = 0
    # The winner last, on top of the others.
    for trial in sorted(search.trials, key=lambda t: t.run_id == search.best):
        reached = [(s, o) for s, o in points.get(trial.run_id, []) if o is not None]
        if not reached:
            continue
        steps, objectives = zip(*reached, strict=True)
        last = (steps[-1], objectives[-1])
        if trial.run_id == search.best:
            axes.plot(steps, objectives, color=WINNER_GOLD, linewidth=3.2, marker="o", zorder=6)
            axes.plot(
                *last, color=WINNER_GOLD, marker="*", markersize=18, markeredgecolor="black", linestyle="", zorder=7
            )
            legend[f"winner (trial {trial.trial})"] = Line2D(
                [], [], color=WINNER_GOLD, linewidth=3.2, marker="*", markersize=12, markeredgecolor="black"
            )
        elif trial.state is TrialState.stopped:
            axes.plot(
                steps,
                objectives,
                color=STOPPED_GREY,
                alpha=0.4 if many else 0.7,
                linewidth=0.8 if many else 1,
                marker=".",
                zorder=2,
            )
            axes.plot(
                *last,
                color=STOPPED_GREY,
                marker="x",
                markersize=6 if many else 8,
                markeredgewidth=2,
                linestyle="",
                zorder=3,
            )
            legend["stopped (× at its last rung)"] = Line2D([], [], color=STOPPED_GREY, marker="x", markeredgewidth=2)
        elif trial.state is TrialState.failed:
            axes.plot(steps, objectives, color=FAILED_RED, alpha=0.7, linewidth=1, linestyle="--", marker=".", zorder=2)
            axes.plot(*last, color=FAILED_RED, marker="v", markersize=7, linestyle="", zorder=3)
            legend["failed (▼ at its last result)"] = Line2D([], [], color=FAILED_RED, linestyle="--", marker="v")
        else:  # completed, or still running / paused: a colour each (not the winner's orange, C1)
            colour = f"C{(0, 2, 3, 4, 5, 6, 8, 9)[others % 8]}"
            others += 1
            done = trial.state is TrialState.completed
            marker, fill = ("o", colour) if done else (".", "white")
            axes.plot(steps, objectives, color=colour, linewidth=1.6, marker=marker, markerfacecolor=fill, zorder=4)
            label = "completed" if done else "running / paused"
            legend[label] = Line2D(
                [], [], color="C0", linewidth=1.6, marker=marker, markerfacecolor="C0" if done else "white"
            )
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
    return _png(figure)


def params_png(search: SearchOutcome) -> bytes:
    """Each trial's objective at its highest rung against each searched parameter, coloured by the rung
    reached, the winner ringed; a log axis (labels that do not overlap) for parameters spanning over 10×."""
    names = searched_params(search)
    colours, norm, top = _rung_colours(search)
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure = _figure(3.8 * columns + 1.2, 3.4 * rows)
    many = len(search.trials) > 30
    scatter = None
    first = None
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1, sharey=first)
        first = first or axes
        points = measured(search, name)
        xs, ys, reached = [x for _, x, _ in points], [y for _, _, y in points], [t.rung for t, _, _ in points]
        scatter = axes.scatter(
            xs,
            ys,
            c=reached,
            cmap=colours,
            norm=norm,
            s=18 if many else 36,
            edgecolors="black",
            linewidths=0.3 if many else 0.4,
            alpha=0.8 if many else 1.0,
            zorder=3,
        )
        for trial, x, y in points:
            if trial.run_id == search.best:
                axes.scatter(
                    [x], [y], marker="*", s=260, facecolors="none", edgecolors=WINNER_GOLD, linewidths=2, zorder=4
                )
        log = log_scale(search, name)
        axes.margins(x=0.08, y=0.12)
        if log:
            axes.set_xscale("log")
            log_ticks(axes, "x")
        axes.set_xlabel(param_name(name) + (" (log)" if log else ""))
        if index % columns == 0:
            axes.set_ylabel(search.metric)
        else:
            axes.tick_params(labelleft=False)
        axes.grid(alpha=0.3)
    if scatter is not None:
        _rung_colourbar(figure, scatter, search, top, figure.axes)
    figure.suptitle(f"{search.experiment_id}: {search.metric} at each trial's highest rung")
    return _png(figure, tight=True)
