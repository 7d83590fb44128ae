"""The tables `bert-eval run` and `status` print stay whole at 80 columns (piped output, a narrow terminal):
no cell is cut to `…`, no line is wider than the terminal, and every value is there to read."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from bert_eval.cli import _configs_table, _leaderboard, _print_results, _status_table
from bert_eval.core.records import CheckpointRef, DatasetSchema, ExperimentSummary, TrainingProgress, TrainingSummary
from bert_eval.spec import TaskType
from bert_eval.temporal.payloads import (
    CoordinatorStatus,
    ExperimentResult,
    RunPhase,
    RunResult,
    RunStatus,
    SearchOutcome,
)

RUN_IDS = [f"sst2-minilm-lr3e-5-bs32-s{seed}" for seed in range(3)]
METRICS = {"accuracy": 0.9123, "f1": 0.9187, "mcc": 0.8241}
SUMMARY = ExperimentSummary.model_validate(
    {
        "split": "validation",
        "configs": [
            {
                "config": "sst2-minilm-lr3e-5-bs32",
                "metric": "accuracy",
                "runs": RUN_IDS,
                "n": 3,
                "mean": 0.9123,
                "std": 0.0042,
                "min": 0.9071,
                "max": 0.9174,
                "low": 0.9019,
                "high": 0.9227,
                "mark": "best",
            },
            {
                "config": "sst2-minilm-lr5e-5-bs32",
                "metric": "accuracy",
                "runs": ["x"],
                "n": 3,
                "mean": 0.9087,
                "std": 0.0051,
                "min": 0.9025,
                "max": 0.9140,
                "low": 0.8961,
                "high": 0.9213,
                "mark": "not significantly worse",
                "p_value": 0.2341,
            },
        ],
        "runs": [
            {
                "run_id": r,
                "config": "sst2-minilm-lr3e-5-bs32",
                "metric": "accuracy",
                "value": 0.9123,
                "low": 0.8934,
                "high": 0.9301,
            }
            for r in RUN_IDS
        ],
    }
)


def _rendered(table: Table) -> str:
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False, color_system=None).print(table)
    return out.getvalue()


def _assert_whole(text: str, *values: str) -> None:
    """No `…`, no line over 80 characters, and each word of each value whole (a cell may wrap between words)."""
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for value in values:
        for word in value.split():
            assert word in text, f"{word!r} (of {value!r}) missing or cut:\n{text}"


def _summary(run_id: str) -> TrainingSummary:
    schema = DatasetSchema(
        text_columns=("sentence",),
        label_column="label",
        task=TaskType.classification,
        label_names=("negative", "positive"),
    )
    return TrainingSummary(
        run_id=run_id,
        model="sentence-transformers/all-MiniLM-L6-v2",
        final_loss=0.2345,
        steps=2105,
        epochs=1.0,
        checkpoints_saved=4,
        resumes=1,
        wall_time_s=812.0,
        train_samples=67349,
        model_dir="/x",
        snapshot_id="s",
        dataset_schema=schema,
    )


def test_the_results_table_fits_80_columns(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    runs = [
        RunResult(run_id=r, config="sst2-minilm-lr3e-5-bs32", status="completed", training=_summary(r), metrics=METRICS)
        for r in RUN_IDS
    ]
    runs.append(
        RunResult(run_id="sst2-minilm-lr1e-3-bs32-s0", status="failed", error="fine_tune: loss is NaN at step 12")
    )
    _print_results(ExperimentResult(experiment_id="sst2-lr-sweep", runs=runs, summary=SUMMARY))
    text = capsys.readouterr().out
    _assert_whole(
        text,
        *RUN_IDS,
        "completed",
        "resumed 1×",
        "2105 steps, final loss 0.2345",
        "classes negative,positive",
        "accuracy=0.9123",
        "mcc=0.8241",
        "[0.8934, 0.9301]",
        "NaN",
        "not significantly worse",
        "[0.8961, 0.9213]",
    )


def test_the_status_table_fits_80_columns() -> None:
    status = CoordinatorStatus(
        experiment_id="sst2-lr-sweep",
        runs=[
            RunStatus(run_id=RUN_IDS[0], phase=RunPhase.completed, metrics=METRICS),
            RunStatus(run_id=RUN_IDS[1], phase=RunPhase.training),
            RunStatus(run_id=RUN_IDS[2], phase=RunPhase.failed, error="fine_tune: CUDA out of memory at step 2"),
        ],
    )
    progress = {
        RUN_IDS[1]: TrainingProgress(
            run_id=RUN_IDS[1],
            phase="training",
            step=1200,
            total_steps=2105,
            epoch=0.57,
            loss=0.3121,
            last_checkpoint=CheckpointRef(step=1000, path="/c"),
        )
    }
    _assert_whole(
        _rendered(_status_table(status, progress)),
        *RUN_IDS,
        "completed",
        "step 1200/2105",
        "loss 0.3121",
        "checkpoint 1000",
        "accuracy=0.9123",
        "CUDA",
        "memory",
    )
    _assert_whole(
        _rendered(_configs_table(SUMMARY)),
        "sst2-minilm-lr5e-5-bs32",
        "0.9087 ± 0.0051",
        "not significantly worse (p = 0.234)",
        "(0.9025, 0.9140)",
        "[0.8961, 0.9213]",
    )


def test_the_search_leaderboard_fits_80_columns() -> None:
    search = SearchOutcome.model_validate(
        {
            "experiment_id": "sst2-search",
            "metric": "accuracy",
            "maximize": True,
            "rungs": [4, 12, 34],
            "best": "sst2-search-t0001",
            "trials": [
                {
                    "trial": i,
                    "run_id": f"sst2-search-t{i:04d}",
                    "rung": rung,
                    "steps": [4, 12, 34][rung],
                    "state": state,
                    "params": {
                        "train.learning_rate": 3.2e-5 * (i + 1),
                        "train.warmup_ratio": 0.1,
                        "train.weight_decay": 0.01,
                    },
                    "objective": 0.8 + 0.01 * i,
                    "objectives": [0.8] * (rung + 1),
                    "metrics": {"accuracy": 0.9021, "f1": 0.9101} if state == "completed" else None,
                }
                for i, (rung, state) in enumerate([(0, "stopped"), (2, "completed"), (1, "stopped")])
            ],
        }
    )
    _assert_whole(
        _rendered(_leaderboard(search)),
        "sst2-search",
        "lr=6.4e-05",
        "warmup=0.1",
        "wd=0.01",
        "2 (34)",
        "0.8100",
        "completed",
        "accuracy=0.9021",
        "f1=0.9101",
    )
