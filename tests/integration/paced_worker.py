"""`bert-eval worker ...`, unchanged except that every optimizer step takes at least
BERT_EVAL_TEST_STEP_PACE_S seconds.

Tests that kill a worker "after the first checkpoint, mid-training" need training to last long enough
for a client to see that checkpoint, on any CI machine; the tiny model's steps are milliseconds, and
how many depends on the machine. Pacing keeps those tests about the same length everywhere, and
leaves the worker, the Trainer, checkpoints and resume untouched (the pause is in a callback, outside
the numerics).
"""

from __future__ import annotations

import os
import sys
import time

from bert_eval.cli import main
from bert_eval.core.training.callbacks import ProgressEvents


def _paced(on_step_end, pace_s: float):
    def on_step_end_paced(self, *args, **kwargs):
        time.sleep(pace_s)
        return on_step_end(self, *args, **kwargs)

    return on_step_end_paced


if __name__ == "__main__":
    ProgressEvents.on_step_end = _paced(ProgressEvents.on_step_end, float(os.environ["BERT_EVAL_TEST_STEP_PACE_S"]))
    sys.argv[0] = "bert-eval"
    main()
