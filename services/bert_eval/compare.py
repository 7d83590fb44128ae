"""Compare two runs, or two configurations (each a group of runs, one per seed), from the runs directory.

One run against one run: a paired comparison over the evaluation examples both were evaluated on
(core/statistics/comparisons.py `compare_runs`), read from their kept predictions. Two groups of runs: seed i of A against
seed i of B (`compare_configs`), paired by the training seed each run's spec records when both sides
hold the same seeds, else in the order given.

On the command line (`bert-eval compare`) a side is a run id, or a configuration written `[NAME=]RUN,RUN,...`.
The arguments are checked before the statistics and evaluation modules (scipy, torch) are imported, so a
mistake is refused at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from os.path import commonprefix
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.storage.layout import RunLayout
from bert_eval.spec import RunSpec, normalize_id

if TYPE_CHECKING:
    from bert_eval.core.evaluation.predictions import Predictions
    from bert_eval.core.statistics.comparisons import ConfigComparison, RunComparison

__all__ = ["Comparison", "compare", "parse_side"]

_SEPARATORS = "-_."


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: the record of a run or configuration comparison, on one split."""

    split: str
    result: RunComparison | ConfigComparison

    @property
    def sentence(self) -> str:
        return self.result.sentence

    def to_json(self) -> dict[str, Any]:
        from bert_eval.core.statistics.comparisons import RunComparison

        kind = "runs" if isinstance(self.result, RunComparison) else "configs"
        return {"kind": kind, "split": self.split, **self.result.to_json()}


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
    if not (runs_dir / "runs").is_dir():
        raise InvalidInputError(
            f"no runs under {runs_dir}: pass the runs directory the workers write to (--runs-dir or BERT_EVAL_RUNS_DIR)"
        )
    # Only now the statistics and the evaluation records (scipy, torch): a mistake above is refused at once.
    from bert_eval.core.evaluation.predictions import load_predictions
    from bert_eval.core.statistics.comparisons import (
        check_comparable,
        compare_configs,
        compare_runs,
        default_metric,
        summarize_seeds,
    )

    names = _names(sides, a_name, b_name)
    predictions = [[load_predictions(RunLayout(runs_dir, run_id), split) for run_id in ids] for ids in sides]
    first = predictions[0][0]
    for run in (*predictions[0][1:], *predictions[1]):
        check_comparable(first, run)
    metric = metric or default_metric(first.task)

    if len(sides[0]) == 1 and len(sides[1]) == 1:
        result = compare_runs(predictions[0][0], predictions[1][0], metric, a_name=names[0], b_name=names[1])
        return Comparison(split=split, result=result)

    ordered, paired_by = _paired_by_seed(runs_dir, predictions)
    summaries = [
        summarize_seeds(name, [_recorded_metric(runs_dir, run, metric) for run in runs], metric)
        for name, runs in zip(names, ordered, strict=True)
    ]
    return Comparison(split=split, result=compare_configs(summaries[0], summaries[1], paired_by=paired_by))


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


def _paired_by_seed(runs_dir: Path, predictions: list[list[Predictions]]) -> tuple[list[list[Predictions]], str]:
    """Both sides sorted by training seed when each side holds the same distinct seeds; else as given."""
    seeds = [[_training_seed(runs_dir, run.run_id) for run in runs] for runs in predictions]
    distinct = all(None not in side and len(set(side)) == len(side) for side in seeds)
    if not distinct or set(seeds[0]) != set(seeds[1]):
        return predictions, "position"
    ordered = [
        [run for _, run in sorted(zip(side, runs, strict=True), key=lambda pair: pair[0] or 0)]
        for side, runs in zip(seeds, predictions, strict=True)
    ]
    return ordered, "seed"


def _recorded_metric(runs_dir: Path, run: Predictions, metric: str) -> float:
    from bert_eval.core.evaluation.batched import load_eval_result

    result = load_eval_result(RunLayout(runs_dir, run.run_id), run.split)
    if result is None or metric not in result.metrics:
        recorded = sorted(result.metrics) if result else []
        raise InvalidInputError(f"run {run.run_id}: its evaluation of {run.split!r} has no {metric!r} (has {recorded})")
    return result.metrics[metric]


# --------------------------------------------------------------------------- CLI
