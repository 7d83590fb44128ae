"""How sure a metric is and whether one run or configuration beats another (scipy.stats), how many seeds a
comparison needs, and an experiment's summary built from its runs on disk."""

from typing import TYPE_CHECKING

from bert_eval.core._lazy import lazy_exports

if TYPE_CHECKING:
    from bert_eval.core.statistics.comparisons import (
        compare_configs,
        compare_runs,
        mark_best,
        metric_interval,
        summarize_seeds,
    )
    from bert_eval.core.statistics.configs import config_interval, constant_prediction
    from bert_eval.core.statistics.power import SeedPlan, plan_seeds
    from bert_eval.core.statistics.summary import RunOutcome, summarize_runs

__all__ = [
    "RunOutcome",
    "SeedPlan",
    "compare_configs",
    "compare_runs",
    "config_interval",
    "constant_prediction",
    "mark_best",
    "metric_interval",
    "plan_seeds",
    "summarize_runs",
    "summarize_seeds",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RunOutcome": "summary",
        "SeedPlan": "power",
        "compare_configs": "comparisons",
        "compare_runs": "comparisons",
        "config_interval": "configs",
        "constant_prediction": "configs",
        "mark_best": "comparisons",
        "metric_interval": "comparisons",
        "plan_seeds": "power",
        "summarize_runs": "summary",
        "summarize_seeds": "comparisons",
    },
)
