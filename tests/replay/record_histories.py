"""Record workflow histories from real runs for the replay tests (docs/versioning.md).

    .venv/bin/python tests/replay/record_histories.py [--prefix v2]

Starts a dev server and real workers, runs a small experiment with the tiny model (one run that
completes, one with bad input), resubmits it (every result reused), runs an 8-trial ASHA search whose
coordinator continues as new (every run of it is written), and writes each workflow's history to
tests/replay/histories/<prefix>-<workflow id>.json. Takes about a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conftest import SHARED_DATA  # noqa: E402
from integration.test_search import search_experiment  # noqa: E402
from support.harness import Stack, make_tiny_model  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.specs import tiny_run  # noqa: E402

from bert_eval.experiment import parse_experiment  # noqa: E402
from bert_eval.temporal.devserver import start_dev_server  # noqa: E402

OUT = Path(__file__).parent / "histories"


def record(prefix: str) -> list[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "tiny-bert")
        (root / "logs").mkdir()
        (root / "runs").mkdir()
        port = free_port()
        server = start_dev_server(port=port, ui_port=None, db_file=None, log_file=root / "logs" / "temporal.log")
        stack = Stack(
            address=f"127.0.0.1:{port}",
            runs_dir=root / "runs",
            data_dir=SHARED_DATA,
            log_dir=root / "logs",
            server=server,
        )
        try:
            stack.start_worker("eval")
            stack.start_worker("training")
            runs = [tiny_run(model, "good"), {**tiny_run(model, "bad-model"), "model": str(root / "no-such-model")}]
            first = stack.run_experiment({"experiment_id": f"{prefix}-first", "runs": runs})
            again = stack.run_experiment({"experiment_id": f"{prefix}-again", "runs": runs[:1]})
            assert [r.status for r in first.runs] == ["completed", "failed"], first
            assert again.runs[0].reused, again
            ids = [
                f"experiment-{prefix}-first",
                "train-good",
                "eval-good-validation",
                "train-bad-model",
                f"experiment-{prefix}-again",
            ]
            written = asyncio.run(_write(stack, prefix, ids))
            search = search_experiment(model, f"{prefix}-search", trials=8, concurrent=2)
            outcome = stack.run_experiment(parse_experiment(search), search_history_limit=200).search
            assert outcome is not None and outcome.finished and outcome.continued >= 1, outcome
            return written + asyncio.run(_write_runs(stack, f"experiment-{prefix}-search"))
        finally:
            stack.close()


async def _write(stack: Stack, prefix: str, workflow_ids: list[str]) -> list[Path]:
    client = await stack.client()
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        name = workflow_id if workflow_id.startswith(f"experiment-{prefix}") else f"{prefix}-{workflow_id}"
        path = OUT / f"{name}.json"
        path.write_text(history.to_json())
        written.append(path)
    return written


async def _write_runs(stack: Stack, workflow_id: str) -> list[Path]:
    """Every run of a workflow that continued as new, oldest first."""
    client = await stack.client()
    runs = [execution async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    written = []
    for index, execution in enumerate(sorted(runs, key=lambda e: e.start_time)):
        history = await client.get_workflow_handle(workflow_id, run_id=execution.run_id).fetch_history()
        path = OUT / f"{workflow_id}-run{index}.json"
        path.write_text(history.to_json())
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="v1", help="version tag put in the file names")
    for path in record(parser.parse_args().prefix):
        print(path)
