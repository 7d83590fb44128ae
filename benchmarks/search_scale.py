"""How large a search one machine runs: N random-sampled trials of a 2-step tiny BERT (no early stopping),
through the dev server and real workers. Prints the wall time, the trials per minute, how many times the
coordinator continued as new and the largest history of any of its runs.

    BERT_EVAL_DATA_DIR=../shared/data .venv/bin/python benchmarks/search_scale.py --trials 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("BERT_EVAL_LOG_LEVEL", "WARNING")

from bench import QUICK, Bench  # noqa: E402
from bench_stack import BenchStack  # noqa: E402

from bert_eval.temporal.names import coordinator_workflow_id  # noqa: E402


def experiment(model_dir: Path, trials: int, concurrent: int) -> dict:
    """40 training rows, half held out: each trial trains 2 steps of 10 rows."""
    template = {
        "model": str(model_dir),
        "dataset": "glue/sst2",
        "train": {"epochs": 1, "batch_size": 10, "learning_rate": 1.0e-3, "max_seq_length": 64, "max_train_samples": 40,
                  "seed": 7, "checkpoint_every_steps": None, "checkpoint_every_seconds": None, "logging_steps": 2},
        "eval": {"split": "validation", "max_eval_samples": 32},
    }  # fmt: skip
    return {
        "experiment_id": f"scale-{trials}",
        "defaults": template,
        "search": {
            "space": {
                "train.learning_rate": {"loguniform": [1e-4, 1e-2]},
                "train.warmup_ratio": {"uniform": [0.0, 0.2]},
            },
            "sampler": "random",
            "trials": trials,
            "max_concurrent": concurrent,
            "seed": 0,
            "objective": {"metric": "accuracy", "holdout": 0.5},
            "scheduler": "none",
        },
    }


async def histories(stack: BenchStack, workflow_id: str) -> list[int]:
    """The event count of every run of the coordinator (continue-as-new chain), oldest first."""
    client = await stack.client()
    runs = sorted([e async for e in client.list_workflows(f'WorkflowId = "{workflow_id}"')], key=lambda e: e.start_time)
    return [len((await client.get_workflow_handle(workflow_id, run_id=e.run_id).fetch_history()).events) for e in runs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--training-workers", type=int, default=2)
    parser.add_argument("--history-limit", type=int, default=8000)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("BERT_EVAL_DATA_DIR", REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="bert-eval-scale-") as tmp:
        root = Path(tmp)
        model = Bench(QUICK, root, data_dir).tiny_model()  # 2 layers, 32 wide, random weights, MiniLM's tokenizer
        (root / "runs").mkdir()
        stack = BenchStack.start(
            runs_dir=root / "runs", data_dir=data_dir, log_dir=root / "logs", BERT_EVAL_FORCE_CPU="true"
        )
        try:
            for kind in ("eval", *["training"] * args.training_workers):
                stack.start_worker(kind, wait=False, BERT_EVAL_EVAL_CONCURRENCY="8")
            for worker in stack.workers:
                worker.wait_ready()
            started = time.monotonic()
            result = stack.run_experiment(
                experiment(model, args.trials, args.concurrent),
                timeout_s=6 * 3600,
                search_history_limit=args.history_limit,
            )
            wall = time.monotonic() - started
            search = result.search
            assert search is not None
            lengths = asyncio.run(histories(stack, coordinator_workflow_id(search.experiment_id)))
        finally:
            stack.close()
    states = {state: sum(t.state.value == state for t in search.trials) for state in ("completed", "failed")}
    record = {
        "trials": args.trials,
        "max_concurrent": args.concurrent,
        "training_workers": args.training_workers,
        "wall_s": round(wall, 1),
        "trials_per_minute": round(args.trials / wall * 60, 1),
        "states": states,
        "continued_as_new": search.continued,
        "history_limit": args.history_limit,
        "largest_history_events": max(lengths),
        "history_events_per_run": lengths,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(record, indent=2))
    return 0 if states["completed"] == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
