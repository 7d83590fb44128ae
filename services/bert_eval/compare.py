"""Compare two runs, or two configurations (each a group of runs, one per seed), from the runs directory.

A run's evaluation is read from its run directory; an eval-only run has none: its evaluation is the cell
(`evals/<cell>/`) that records it in `runs/<run_id>.json`, the cell the coordinator evaluated it as.

One run against one run: a paired comparison over the evaluation examples both were evaluated on
(core/statistics/comparisons.py `compare_runs`), read from their kept predictions. Two groups of runs
(`compare_configs`): paired by the training seed each run's spec records when both sides hold the same
seeds, else unpaired; never by the order the runs are given in. Each group also gets its interval over seeds
and evaluation sets (core/statistics/configs.py). A run that predicts one class for every row is flagged.

On the command line (`bert-eval compare`) a side is a run id, or a configuration written `[NAME=]RUN,RUN,...`.
The arguments are checked before the statistics and evaluation modules (scipy, torch) are imported, so a
mistake is refused at once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from os.path import commonprefix
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.storage.layout import CellLayout, RunLayout, evals_dir
from bert_eval.spec import RunSpec, normalize_id

if TYPE_CHECKING:
    from bert_eval.core.evaluation.predictions import Predictions
    from bert_eval.core.records import EvalResult
    from bert_eval.core.statistics.comparisons import ConfigComparison, ConfigSummary, RunComparison

__all__ = ["Comparison", "compare", "parse_side"]

_SEPARATORS = "-_."


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: the record of a run or configuration comparison, on one split, and flags for
    runs whose results decide nothing (one class predicted for every row)."""

    split: str
    result: RunComparison | ConfigComparison
    flags: tuple[str, ...] = ()

    @property
    def sentence(self) -> str:
        """The verdict, then one `warning:` line per flag."""
        return "\n".join([self.result.sentence, *(f"warning: {flag}" for flag in self.flags)])

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data (`compare --json`): the statistics, the sentence and any flags."""
        from bert_eval.core.statistics.comparisons import RunComparison

        kind = "runs" if isinstance(self.result, RunComparison) else "configs"
        return {"kind": kind, "split": self.split, **self.result.to_json(), "flags": list(self.flags)}


def compare(
    runs_dir: Path,
    a: Sequence[str],
    b: Sequence[str],
    *,
    split: str = "validation",
    metric: str | None = None,
    a_name: str | None = None,
    b_name: str | None = None,
) -> Comparison:
    """Compare A and B (each a list of run ids: one run, or one run per seed of a configuration) on their
    evaluations of `split`. ValueError (InvalidInputError where a run's files are at fault) naming the run
    and the cause when a run is unknown, unevaluated, the two sides are the same runs, or they cannot be
    compared."""
    runs_dir = Path(runs_dir)
    sides = [_run_ids(a, "A"), _run_ids(b, "B")]
    if set(sides[0]) == set(sides[1]):
        raise ValueError(
            f"A and B are the same run(s) ({', '.join(sides[0])}): "
            "a comparison needs two different runs or configurations"
        )
    if shared := sorted(set(sides[0]) & set(sides[1])):
        raise ValueError(f"run {', '.join(shared)} is on both sides; a run belongs to one side of a comparison")
    if not ((runs_dir / "runs").is_dir() or evals_dir(runs_dir).is_dir()):
        raise InvalidInputError(
            f"no runs under {runs_dir}: pass the runs directory the workers write to (--runs-dir or BERT_EVAL_RUNS_DIR)"
        )
    sources = {run_id: _source(runs_dir, run_id, split) for ids in sides for run_id in ids}
    # Only now the statistics and the evaluation records (scipy, torch): a mistake above is refused at once.
    from bert_eval.core.statistics.comparisons import check_comparable, compare_configs, compare_runs, default_metric
    from bert_eval.core.statistics.configs import constant_prediction

    names = _names(sides, a_name, b_name)
    predictions = [[_predictions(runs_dir, run_id, split, sources[run_id]) for run_id in ids] for ids in sides]
    first = predictions[0][0]
    for run in (*predictions[0][1:], *predictions[1]):
        check_comparable(first, run)
    metric = metric or default_metric(first.task)
    flags = tuple(flag for runs in predictions for run in runs if (flag := constant_prediction(run)) is not None)

    if len(sides[0]) == 1 and len(sides[1]) == 1:
        result = compare_runs(predictions[0][0], predictions[1][0], metric, a_name=names[0], b_name=names[1])
        return Comparison(split=split, result=result, flags=flags)

    summaries = [_summary(runs_dir, name, runs, metric) for name, runs in zip(names, predictions, strict=True)]
    return Comparison(split=split, result=compare_configs(summaries[0], summaries[1]), flags=flags)


def seed_values(
    runs_dir: Path, run_ids: Sequence[str], *, split: str = "validation", metric: str | None = None
) -> tuple[str, list[float]]:
    """One configuration's metric, one value per run: (metric, values). InvalidInputError naming the run when a
    run is unknown or has no evaluation of `split` with that metric."""
    ids = _run_ids(run_ids, "the configuration")
    results = []
    for run_id in ids:
        result = _eval_result(runs_dir, run_id, split)
        if result is None:
            raise InvalidInputError(f"run {run_id} has no evaluation of split {split!r} under {runs_dir}")
        results.append(result)
    metric = metric or next((m for m in ("accuracy", "pearson") if m in results[0].metrics), None)
    values = []
    for run_id, result in zip(ids, results, strict=True):
        if metric is None or metric not in result.metrics:
            raise InvalidInputError(
                f"run {run_id}: its evaluation of {split!r} has no {metric!r} (has {sorted(result.metrics)}); "
                "pass --metric"
            )
        values.append(result.metrics[metric])
    return str(metric), values


def _summary(runs_dir: Path, name: str, runs: list[Predictions], metric: str) -> ConfigSummary:
    """The configuration's values over seeds, with their training seeds where every run records a distinct one,
    and its interval over seeds and evaluation sets."""
    from bert_eval.core.statistics.comparisons import summarize_seeds
    from bert_eval.core.statistics.configs import config_interval

    seeds = [_training_seed(runs_dir, run.run_id) for run in runs]
    known = [seed for seed in seeds if seed is not None]
    values = [_recorded_metric(runs_dir, run, metric) for run in runs]
    recorded = known if len(known) == len(runs) and len(set(known)) == len(known) else None
    summary = summarize_seeds(name, values, metric, seeds=recorded)
    return dataclasses.replace(summary, with_test_set=config_interval(runs, metric))


def parse_side(text: str) -> tuple[str | None, list[str]]:
    """`[NAME=]RUN,RUN,...` -> (NAME or None, run ids)."""
    name, _, runs = text.rpartition("=")
    return (name.strip() or None), [run.strip() for run in runs.split(",") if run.strip()]


def _run_ids(ids: Sequence[str], side: str) -> list[str]:
    if not ids:
        raise ValueError(f"side {side} names no runs; give a run id, or a configuration's run ids")
    canonical = [normalize_id(run_id) for run_id in ids]
    repeated = sorted({run_id for run_id in canonical if canonical.count(run_id) > 1})
    if repeated:
        raise ValueError(f"side {side} lists run {', '.join(repeated)} more than once; list each seed's run once")
    return canonical


def _names(sides: list[list[str]], a_name: str | None, b_name: str | None) -> tuple[str, str]:
    """Given names, else the run id of a single run, else the run ids' common stem (`base-s1,base-s2`: base)."""
    defaults = []
    for ids, fallback in zip(sides, ("A", "B"), strict=True):
        defaults.append(ids[0] if len(ids) == 1 else _stem(ids) or fallback)
    if defaults[0] == defaults[1] and sides[0] != sides[1]:
        defaults = ["A", "B"]
    return a_name or defaults[0], b_name or defaults[1]


def _stem(ids: list[str]) -> str:
    """The run ids' common prefix, cut back to whole separator-delimited parts."""
    prefix = commonprefix(ids)
    if not all(len(run_id) == len(prefix) or run_id[len(prefix)] in _SEPARATORS for run_id in ids):
        prefix = prefix[: max(prefix.rfind(c) for c in _SEPARATORS) + 1]
    return prefix.rstrip(_SEPARATORS)


def _training_seed(runs_dir: Path, run_id: str) -> int | None:
    try:
        record = json.loads(RunLayout(runs_dir, run_id).spec_file.read_text())
        return RunSpec.model_validate(record["spec"]).train.seed
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _recorded_metric(runs_dir: Path, run: Predictions, metric: str) -> float:
    result = _eval_result(runs_dir, run.run_id, run.split)
    if result is None or metric not in result.metrics:
        recorded = sorted(result.metrics) if result else []
        raise InvalidInputError(f"run {run.run_id}: its evaluation of {run.split!r} has no {metric!r} (has {recorded})")
    return result.metrics[metric]


def _source(runs_dir: Path, run_id: str, split: str) -> CellLayout | None:
    """Where the run's evaluation of `split` is kept: None for its run directory, else the evaluation cell that
    records it (an eval-only run). Reads no evaluation (no scipy or torch import), so an unknown run is refused
    at once. InvalidInputError naming the run, and what to do, when it has neither."""
    layout = RunLayout(runs_dir, run_id)
    if layout.eval_file(split).exists():
        return None
    if (cell := _cell_of(runs_dir, run_id, split)) is not None:
        return cell
    if not layout.root.is_dir():
        raise InvalidInputError(
            f"run {run_id} has no evaluation of split {split!r} under {runs_dir}: no run directory, and no "
            "evaluation cell records it (an eval-only run is recorded in its cell when it finishes; one that "
            "finished before that was recorded: resubmit its experiment, which reuses the cell); check the run "
            "id and --split"
        )
    return None


def _predictions(runs_dir: Path, run_id: str, split: str, cell: CellLayout | None) -> Predictions:
    """The kept predictions of the run's evaluation of `split`, from its run directory or (an eval-only run)
    `cell`, as `_source` found them. InvalidInputError naming the run, and what to do, when they cannot be
    read."""
    from bert_eval.core.evaluation.predictions import load_predictions, predictions_of
    from bert_eval.core.storage.rundir import trained_summary

    if cell is not None:
        return dataclasses.replace(predictions_of(_cell_result(run_id, cell)), run_id=run_id)
    layout = RunLayout(runs_dir, run_id)
    if not layout.eval_file(split).exists() and not any(layout.root.glob("eval-*.json")):
        trained_summary(layout)  # a run that failed, or is still training, says so
    return load_predictions(layout, split)


def _eval_result(runs_dir: Path, run_id: str, split: str) -> EvalResult | None:
    """The run's evaluation of `split` (its run directory's, else its cell's), or None when there is none."""
    from bert_eval.core.evaluation.batched import load_eval_result

    if (result := load_eval_result(RunLayout(runs_dir, run_id), split)) is not None:
        return result
    cell = _cell_of(runs_dir, run_id, split)
    return _cell_result(run_id, cell) if cell is not None else None


def _cell_of(runs_dir: Path, run_id: str, split: str) -> CellLayout | None:
    """The evaluation cell of `split` that run `run_id` was evaluated as on its own dataset (else on the one
    other dataset it was evaluated on); None when no cell records the run. InvalidInputError when the run id
    names several (the id was reused with another model or rows)."""
    recorded = []
    for path in CellLayout.runs_evaluated_as(runs_dir, run_id, split):
        try:
            dataset = json.loads(path.read_text())["dataset"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            unreadable = f"{path} is unreadable ({type(exc).__name__}); move it aside"
            raise InvalidInputError(f"run {run_id}: {unreadable}") from None
        recorded.append((dataset, path.parent.parent.name))
    own = [name for dataset, name in recorded if dataset is None]
    cells = own or [name for _, name in recorded]
    if len(cells) > 1:
        raise InvalidInputError(
            f"run {run_id} was evaluated on {split!r} as {len(cells)} different cells ({', '.join(cells)} under "
            f"{evals_dir(runs_dir)}): its id was reused with another model or dataset; give each run its own id"
        )
    if not cells:
        return None
    digest, snapshot_id, _ = cells[0].split("-", 2)
    cell = CellLayout(Path(runs_dir), digest, snapshot_id, split)
    if (problem := cell.escape()) is not None:
        raise InvalidInputError(f"run {run_id}: {problem}")
    return cell


def _cell_result(run_id: str, cell: CellLayout) -> EvalResult:
    """The cell's result, its files as seen from here (the volume may be mounted elsewhere than where it was
    written)."""
    from bert_eval.core.records import EvalResult

    try:
        result = EvalResult.model_validate(json.loads(cell.eval_file.read_text()))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"run {run_id}: its evaluation cell {cell.root} is unreadable ({type(exc).__name__}); resubmit its "
            "experiment to evaluate it again"
        ) from None
    return result.model_copy(update={"path": str(cell.eval_file), "predictions_path": str(cell.predictions_file)})


# --------------------------------------------------------------------------- CLI
