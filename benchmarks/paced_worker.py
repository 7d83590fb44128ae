"""`bert-eval worker ...` (or, imported, the pacing alone) with every optimizer step lasting at least
BERT_EVAL_TEST_STEP_PACE_S seconds: the benchmarks' kill rows and the tests that kill a worker "after the
first checkpoint, mid-training", whose tiny model's steps are milliseconds, need that kill to land
mid-training on any machine.

The pause is in the step callback, outside the numerics: the worker, the Trainer, checkpoints and resume are
unchanged. `search_bench.py`'s Optuna subprocess imports `_paced` from here (this directory is its path's
first entry); `bench_stack.py` and the tests' harness (tests/support/harness.py) start this file as a paced
worker. It imports nothing from `tests/`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

PACE_ENV = "BERT_EVAL_TEST_STEP_PACE_S"


def _paced(on_step_end: Callable[..., Any], pace_s: float) -> Callable[..., Any]:
    """`on_step_end` preceded by a sleep of `pace_s` seconds."""

    def on_step_end_paced(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(pace_s)
        return on_step_end(self, *args, **kwargs)

    return on_step_end_paced


if __name__ == "__main__":
    from bert_eval.cli import main
    from bert_eval.core.training.callbacks import ProgressEvents

    pace_s = float(os.environ[PACE_ENV])
    ProgressEvents.on_step_end = _paced(ProgressEvents.on_step_end, pace_s)  # type: ignore[method-assign]
    sys.argv[0] = "bert-eval"
    main()
