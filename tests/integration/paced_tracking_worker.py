"""`bert-eval worker ...`, unchanged except that logging each bert-eval run to MLflow takes at least
BERT_EVAL_TEST_TRACKING_PACE_S seconds more, so a test can kill the worker while it logs an experiment
(logging a tiny run takes a fraction of a second)."""

from __future__ import annotations

import os
import sys
import time

from bert_eval.cli import main
from bert_eval.tracking import mlflow_logging


def _paced(log_run, pace_s: float):
    def log_run_paced(*args, **kwargs):
        time.sleep(pace_s)
        return log_run(*args, **kwargs)

    return log_run_paced


if __name__ == "__main__":
    mlflow_logging._log_run = _paced(mlflow_logging._log_run, float(os.environ["BERT_EVAL_TEST_TRACKING_PACE_S"]))
    sys.argv[0] = "bert-eval"
    main()
