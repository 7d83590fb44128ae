"""Experiment report from the runs directory alone: one self-contained HTML page and its figures as PNGs.

- `collect`: reads an experiment's artifacts into records (runs, statistics, a search's outcome);
- `figures`: draws them (forest plots of configurations and runs, loss curves overlaid by configuration, a
  search's trials by rung reached, its rung ladder and parameters), a bounded number whatever the trials;
- `html`: the page, its tables and stylesheet (`write_report`).

`report_command` is the `bert-eval report` command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bert_eval.report.collect import ExperimentRecords, ReportError, RunRecord, collect_experiment, collect_run
from bert_eval.report.html import write_report
from bert_eval.spec import normalize_id

__all__ = [
    "ExperimentRecords",
    "ReportError",
    "RunRecord",
    "collect_experiment",
    "collect_run",
    "report_command",
    "write_report",
]


def report_command(
    experiment_id: Annotated[str, typer.Argument(help="experiment id, as submitted")],
    out: Annotated[
        Path | None, typer.Option("--out", help="output directory [default: reports/<experiment_id>]")
    ] = None,
    per_run: Annotated[
        bool, typer.Option("--per-run", help="also one loss chart per run, with its checkpoints and resumes")
    ] = False,
) -> None:
    """Write an HTML report: forest plots of the configurations and runs, loss curves by configuration and a
    metrics table (for a search, also its leaderboard, the trials' loss curves by rung reached, the rung ladder
    and each parameter against the objective)."""
    from rich.console import Console

    from bert_eval.settings import get_settings

    try:
        experiment_id = normalize_id(experiment_id, what="experiment_id")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="EXPERIMENT_ID") from None
    try:
        path = write_report(
            get_settings().runs_dir, experiment_id, out or Path("reports") / experiment_id, per_run_charts=per_run
        )
    except ReportError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(str(path))
