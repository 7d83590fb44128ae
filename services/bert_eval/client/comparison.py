"""`bert_eval.compare`: two runs or two configurations, from the runs directory (`bert_eval.compare` module's
`compare`, with sides given the way a notebook holds them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from bert_eval.compare import Comparison as _Comparison
from bert_eval.compare import compare as _compare
from bert_eval.compare import parse_side
from bert_eval.core.records import ConfigStats
from bert_eval.settings import get_settings

__all__ = ["Comparison", "Side", "compare"]

Side: TypeAlias = "str | Sequence[str] | ConfigStats"


@dataclass(frozen=True)
class Comparison(_Comparison):
    """A comparison's record: `sentence` (one plain-language line), `result` (the run or configuration
    comparison: intervals, difference, p-value), `split`; `to_dict()` gives it as plain JSON types."""

    def to_dict(self) -> dict[str, Any]:
        """The whole record as plain JSON types, as `bert-eval compare --json` prints it."""
        return self.to_json()


def compare(
    a: Side, b: Side, *, split: str = "validation", metric: str | None = None, runs_dir: str | Path | None = None
) -> Comparison:
    """Is A better than B? A paired comparison from the runs' kept predictions.

    Parameters:
        a, b: a run id (`"fast-s7"`), a configuration written `"[NAME=]RUN,RUN,..."`, a list of run ids
            (one per seed), or a configuration record (`ConfigStats`, a row source of `configs_df()`).
            One run against one run: a paired test over the evaluation rows; two configurations: seed
            against seed.
        split: the evaluation split both sides were evaluated on.
        metric: the metric to compare on; default accuracy (pearson for regression).
        runs_dir: the runs directory the workers write to; default `BERT_EVAL_RUNS_DIR`.

    Returns:
        The `Comparison` (`.sentence`, `.to_dict()`, `.result`).

    Raises:
        ValueError: a side names no run, a run is unknown or not evaluated on `split`, or the two sides
            cannot be compared (different rows or tasks); the message names the run and the cause.
    """
    (a_name, a_runs), (b_name, b_runs) = _side(a, "a"), _side(b, "b")
    found = _compare(
        Path(runs_dir) if runs_dir is not None else get_settings().runs_dir,
        a_runs,
        b_runs,
        split=split,
        metric=metric,
        a_name=a_name,
        b_name=b_name,
    )
    return Comparison(split=found.split, result=found.result)


def _side(side: Side, name: str) -> tuple[str | None, list[str]]:
    if isinstance(side, ConfigStats):
        return side.config, list(side.runs)
    if isinstance(side, str):
        return parse_side(side)
    if isinstance(side, Sequence) and all(isinstance(run, str) for run in side):
        return None, list(side)
    raise ValueError(
        f"compare: {name} must be a run id, 'NAME=RUN,RUN,...', a list of run ids or a configuration record, "
        f"got {type(side).__name__}"
    )
