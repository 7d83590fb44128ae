"""One experiment is one trace; every span carries run_id; worker logs are JSON lines with run_id."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.harness import Stack, create_namespace
from support.specs import tiny_run

from bert_eval import telemetry
from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
from bert_eval.core.errors import TrainingInterrupted
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.experiment import parse_experiment
from bert_eval.settings import Settings, TemporalSettings
from bert_eval.temporal.client import connect
from bert_eval.temporal.submit import start_experiment
from bert_eval.temporal.worker import WorkerKind, build_worker

pytestmark = pytest.mark.integration


def _interrupt_at_step(spec, runs_dir: Path, data_dir: Path, step: int) -> None:
    """Leave a checkpoint behind, as a killed worker would."""
    snapshot = create_snapshot(SnapshotInput.for_run(spec), runs_dir=runs_dir, data_dir=data_dir)
    seen: list[int] = []
    with pytest.raises(TrainingInterrupted):
        fine_tune(
            FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir),
            on_progress=lambda p: seen.append(p.step),
            should_stop=lambda: bool(seen) and seen[-1] >= step,
        )


def test_one_experiment_is_one_trace_with_run_ids(
    shared_server: str, tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("bert-eval-test", exporter=exporter)
    runs_dir = tmp_path / "bert_runs"
    experiment = parse_experiment(
        {
            "experiment_id": "traced",
            "runs": [tiny_run(tiny_model_dir, "resumed-run"), tiny_run(tiny_model_dir, "fresh-run", seed=8)],
        }
    )
    _interrupt_at_step(experiment.runs[0], runs_dir, data_dir, step=4)
    exporter.clear()

    namespace = create_namespace(shared_server, "traced")
    settings = Settings(runs_dir=runs_dir, data_dir=data_dir, force_cpu=True)

    async def go():
        client = await connect(TemporalSettings(address=shared_server, namespace=namespace))
        async with build_worker(client, WorkerKind.training, settings), build_worker(client, WorkerKind.eval, settings):
            handle = await start_experiment(client, experiment, settings)
            return await asyncio.wait_for(handle.result(), timeout=300)

    result = asyncio.run(go())

    assert [r.status for r in result.runs] == ["completed", "completed"]
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    for expected in (
        "StartWorkflow:CoordinatorWorkflow",
        "RunWorkflow:CoordinatorWorkflow",
        "StartChildWorkflow:CheckpointedBertTrainingWorkflow",
        "RunWorkflow:CheckpointedBertTrainingWorkflow",
        "RunActivity:snapshot_dataset",
        "RunActivity:fine_tune",
        "RunWorkflow:BertEvalWorkflow",
        "RunActivity:evaluate_model",
        "snapshot",
        "train",
        "epoch",
        "checkpoint.save",
        "resume",
        "evaluate",
    ):
        assert expected in names, f"no {expected!r} span in {sorted(names)}"
    assert len({s.context.trace_id for s in spans}) == 1, "the experiment spans more than one trace"
    missing = [s.name for s in spans if not (s.attributes or {}).get("run_id")]
    assert not missing, f"spans without run_id: {missing}"
    assert all((s.attributes or {}).get("experiment_id") == "traced" for s in spans)

    def run_of(name: str) -> set[str]:
        return {s.attributes["run_id"] for s in spans if s.name == name}

    assert run_of("RunActivity:fine_tune") == {"resumed-run", "fresh-run"}
    assert run_of("RunWorkflow:CoordinatorWorkflow") == {"resumed-run,fresh-run"}
    [resume] = [s for s in spans if s.name == "resume"]
    assert resume.attributes["run_id"] == "resumed-run" and resume.attributes["from_step"] == 4
    train = next(s for s in spans if s.name == "train" and s.attributes["run_id"] == "resumed-run")
    assert train.attributes["resumed_from_step"] == 4


def test_worker_log_lines_are_json_with_run_id(served: Stack, tiny_model_dir: Path) -> None:
    training = served.worker("training")
    served.run_experiment({"experiment_id": "logged", "runs": [tiny_run(tiny_model_dir, "logged-run")]})
    lines = [json.loads(line) for line in training.log_file.read_text().splitlines() if line.startswith("{")]
    tagged = [line for line in lines if line.get("run_id") == "logged-run"]
    assert any(line["event"] == "checkpoint saved" for line in tagged)
    started = next(line for line in tagged if line["event"] == "fine-tune started")
    assert (
        started["experiment_id"] == "logged"
        and started["workflow_id"] == "train-logged-run"
        and started["attempt"] == 1
    )
    # Library progress bars and chatter stay out of worker logs: every line is a JSON object.
    raw = [line for line in training.log_file.read_text().splitlines() if line.strip()]
    assert all(line.startswith("{") for line in raw), [line for line in raw if not line.startswith("{")][:3]
