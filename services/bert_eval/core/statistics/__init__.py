"""How sure a metric is and whether one run or configuration beats another (scipy.stats), and an experiment's
summary built from its runs on disk."""

from typing import TYPE_CHECKING

from bert_eval.core._lazy import lazy_exports

if TYPE_CHECKING:
    from bert_eval.core.statistics.comparisons import compare_configs, compare_runs, mark_best, metric_interval, summarize_seeds
    from bert_eval.core.statistics.summary import RunOutcome, summarize_runs

__all__ = [
    "RunOutcome",
    "compare_configs",
    "compare_runs",
    "mark_best",
    "metric_interval",
    "summarize_runs",
    "summarize_seeds",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RunOutcome": "summary",
        "compare_configs": "comparisons",
        "compare_runs": "comparisons",
        "mark_best": "comparisons",
        "metric_interval": "comparisons",
        "summarize_runs": "summary",
        "summarize_seeds": "comparisons",
    },
)
