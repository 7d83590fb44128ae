"""The Python client's parts that need no server: DataFrames built from an experiment's records, the
progress counts, the private event-loop thread, the connection settings and the `bert_eval` package."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bert_eval
from bert_eval.client._loop import LoopThread
from bert_eval.client.comparison import compare
from bert_eval.client.connection import client_settings
from bert_eval.client.frames import cells_frame, configs_frame, predictions_frame, runs_frame, trials_frame
from bert_eval.client.progress import progress_counts
from bert_eval.core.records import (
    ConfigStats,
    DatasetSchema,
    EvalResult,
    ExperimentSummary,
    PredictResult,
    RunInterval,
    TrainingProgress,
    TrainingSummary,
)
from bert_eval.core.search.asha import TrialState
from bert_eval.experiment import parse_experiment
from bert_eval.spec import TaskType
from bert_eval.temporal.payloads import (
    CoordinatorStatus,
    ExperimentResult,
    MatrixCell,
    RunPhase,
    RunResult,
    RunStatus,
    SearchOutcome,
    SearchTrial,
)

SCHEMA = DatasetSchema(
    text_columns=("sentence",), label_column="label", task=TaskType.classification, label_names=("0", "1")
)
EXPERIMENT = parse_experiment(
    {
        "experiment_id": "lr",
        "defaults": {"model": "/models/tiny", "dataset": "glue/sst2", "train": {"seed": 7}},
        "runs": [
            {"run_id": "slow", "train": {"learning_rate": 1e-5}, "seeds": 2},
            {"run_id": "fast", "train": {"learning_rate": 3e-3}, "seeds": 2},
        ],
    }
)
ACCURACY = {"slow-s7": 0.5, "slow-s8": 0.6, "fast-s7": 0.8, "fast-s8": 0.9}


def _training(run_id: str, resumes: int = 0) -> TrainingSummary:
    return TrainingSummary(
        run_id=run_id,
        model="/models/tiny",
        final_loss=0.4,
        steps=4,
        epochs=1.0,
        checkpoints_saved=0,
        resumes=resumes,
        wall_time_s=2.5,
        train_samples=64,
        dataset_schema=SCHEMA,
        model_dir=f"/runs/{run_id}/model",
        snapshot_id="s",
    )


def _evaluation(run_id: str, accuracy: float, split: str = "validation") -> EvalResult:
    return EvalResult(
        run_id=run_id,
        split=split,
        examples=96,
        metrics={"accuracy": accuracy, "f1": accuracy - 0.1},
        duration_s=0.1,
        path="/x",
    )


def _result() -> ExperimentResult:
    runs = []
    for run_id, accuracy in ACCURACY.items():
        cells = (
            [MatrixCell(dataset="imdb", evaluation=_evaluation(run_id, accuracy - 0.2, split="test"))]
            if run_id == "fast-s7"
            else []
        )
        runs.append(
            RunResult(
                run_id=run_id,
                config=run_id.split("-")[0],
                status="completed",
                training=_training(run_id, resumes=int(run_id == "slow-s8")),
                evaluation=_evaluation(run_id, accuracy),
                cells=cells,
                metrics={"accuracy": accuracy, "f1": accuracy - 0.1},
            )
        )
    runs.append(RunResult(run_id="broken", config="broken", status="failed", error="out of memory"))
    intervals = [
        RunInterval(
            run_id=r,
            config=r.split("-")[0],
            metric="accuracy",
            value=a,
            low=a - 0.05,
            high=a + 0.05,
            dataset="glue/sst2",
            split="validation",
        )
        for r, a in ACCURACY.items()
    ]
    matrix = [
        *intervals,
        RunInterval(
            run_id="fast-s7",
            config="fast",
            metric="accuracy",
            value=0.6,
            low=0.5,
            high=0.7,
            dataset="imdb",
            split="test",
        ),
    ]
    configs = [
        ConfigStats(
            config="fast",
            metric="accuracy",
            runs=["fast-s7", "fast-s8"],
            n=2,
            mean=0.85,
            std=0.07,
            min=0.8,
            max=0.9,
            low=0.2,
            high=1.0,
            mark="best",
        ),
        ConfigStats(
            config="slow",
            metric="accuracy",
            runs=["slow-s7", "slow-s8"],
            n=2,
            mean=0.55,
            std=0.07,
            min=0.5,
            max=0.6,
            low=0.0,
            high=1.0,
            mark="significantly worse",
            p_value=0.02,
        ),
    ]
    summary = ExperimentSummary(experiment_id="lr", split="validation", configs=configs, runs=intervals, matrix=matrix)
    return ExperimentResult(experiment_id="lr", runs=runs, summary=summary)


def test_runs_frame_has_one_row_per_run_with_seed_params_metrics_and_interval() -> None:
    frame = runs_frame(_result(), EXPERIMENT).set_index("run_id")
    assert list(frame.index) == [*ACCURACY, "broken"]
    assert list(frame.loc[list(ACCURACY), "seed"]) == [7, 8, 7, 8]
    # Only what tells the configurations apart: the learning rate, not the shared model or batch size.
    assert list(frame.loc[list(ACCURACY), "train.learning_rate"]) == [1e-5, 1e-5, 3e-3, 3e-3]
    assert "model" not in frame.columns and "train.batch_size" not in frame.columns
    assert frame.loc["slow-s8", "resumes"] == 1 and frame.loc["fast-s7", "train_seconds"] == 2.5
    assert frame.loc["fast-s8", "accuracy"] == 0.9 and frame.loc["fast-s8", "accuracy_high"] == pytest.approx(0.95)
    assert frame.loc["broken", "state"] == "failed" and frame.loc["broken", "error"] == "out of memory"
    assert frame.loc["broken", ["accuracy", "accuracy_low", "steps"]].isna().all()


def test_runs_frame_without_the_submitted_experiment_leaves_seed_empty() -> None:
    frame = runs_frame(_result(), None)
    assert frame["seed"].isna().all() and "train.learning_rate" not in frame.columns


def test_configs_frame_marks_best_and_not_worse() -> None:
    frame = configs_frame(_result()).set_index("config")
    assert list(frame.index) == ["fast", "slow"]
    assert frame.loc["fast", ["best", "not_worse"]].tolist() == [True, True]
    assert frame.loc["slow", ["best", "not_worse", "p_value"]].tolist() == [False, False, 0.02]
    assert frame.loc["slow", "runs"] == ["slow-s7", "slow-s8"] and frame.loc["fast", "n"] == 2


def test_frames_of_an_experiment_without_summary_or_search_are_empty_with_their_columns() -> None:
    result = ExperimentResult(experiment_id="e", runs=[])
    assert configs_frame(result).empty and list(configs_frame(result).columns)[:3] == ["config", "metric", "n"]
    assert trials_frame(result).empty and "objective" in trials_frame(result).columns
    assert cells_frame(result).empty and runs_frame(result).empty


def test_cells_frame_is_the_evaluation_matrix_with_intervals() -> None:
    frame = cells_frame(_result())
    fast = frame[frame["run_id"] == "fast-s7"].set_index("dataset")
    assert list(fast.index) == ["glue/sst2", "imdb"] and fast["primary"].tolist() == [True, False]
    assert fast.loc["imdb", "split"] == "test" and fast.loc["imdb", "accuracy"] == pytest.approx(0.6)
    assert (fast.loc["imdb", "accuracy_low"], fast.loc["imdb", "accuracy_high"]) == (0.5, 0.7)
    assert len(frame) == 5  # four primary evaluations and one matrix cell; the failed run has none


def test_trials_frame_lists_params_rung_state_objective_and_best() -> None:
    trials = [
        SearchTrial(
            trial=0,
            run_id="s-t0000",
            params={"train.learning_rate": 1e-4},
            rung=1,
            steps=120,
            state=TrialState.completed,
            objective=0.8,
            metrics={"accuracy": 0.79},
            train_seconds=12.0,
        ),
        SearchTrial(
            trial=1,
            run_id="s-t0001",
            params={"train.learning_rate": 1e-2},
            rung=0,
            steps=40,
            state=TrialState.stopped,
            objective=0.5,
        ),
    ]
    search = SearchOutcome(
        experiment_id="s",
        metric="accuracy",
        maximize=True,
        rungs=[40, 120],
        trials=trials,
        best="s-t0000",
        finished=True,
    )
    frame = trials_frame(ExperimentResult(experiment_id="s", runs=[], search=search)).set_index("trial")
    assert frame.loc[
        0, ["train.learning_rate", "rung", "steps", "state", "objective", "best", "accuracy"]
    ].tolist() == [1e-4, 1, 120, "completed", 0.8, True, 0.79]
    assert (
        frame.loc[1, ["state", "best"]].tolist() == ["stopped", False]
        and pytest.approx(frame.loc[1, "train.learning_rate"]) == 1e-2
    )


def test_predictions_frame_for_classification_and_regression() -> None:
    labels = PredictResult(
        run_id="r",
        texts=["good", "bad"],
        predicted_labels=["pos", "neg"],
        predicted_label_ids=[1, 0],
        confidences=[0.9, 0.7],
    )
    assert predictions_frame(labels).to_dict("list") == {
        "text": ["good", "bad"],
        "label": ["pos", "neg"],
        "label_id": [1, 0],
        "confidence": [0.9, 0.7],
    }
    scores = PredictResult(run_id="r", texts=["a"], predicted_labels=["3.5"], scores=[3.5])
    assert predictions_frame(scores).to_dict("list") == {"text": ["a"], "label": ["3.5"], "score": [3.5]}


def test_progress_counts_runs_ended_phases_and_live_steps() -> None:
    status = CoordinatorStatus(
        experiment_id="e",
        runs=[
            RunStatus(run_id="a", phase=RunPhase.completed),
            RunStatus(run_id="b", phase=RunPhase.training),
            RunStatus(run_id="c", phase=RunPhase.failed),
        ],
    )
    done, total, detail = progress_counts(status, {"b": TrainingProgress(run_id="b", step=3, total_steps=10)})
    assert (done, total) == (2, 3) and "1 training" in detail and "training steps 3/10" in detail


def test_progress_counts_a_search_against_its_trial_budget() -> None:
    trials = [
        SearchTrial(trial=i, run_id=f"t{i}", params={}, rung=0, steps=4, state=state)
        for i, state in enumerate((TrialState.running, TrialState.stopped))
    ]
    search = SearchOutcome(experiment_id="s", metric="accuracy", maximize=True, rungs=[4], trials=trials)
    done, total, detail = progress_counts(CoordinatorStatus(experiment_id="s", runs=[], search=search), {}, trials=8)
    assert (done, total) == (1, 8) and detail == "1 running, 1 stopped"


def test_loop_thread_runs_coroutines_from_inside_a_running_event_loop() -> None:
    loop = LoopThread()
    try:

        async def notebook_cell() -> int:  # a cell runs inside the kernel's loop; the sync call must not nest it
            return loop.run(asyncio.sleep(0.01, result=41)) + 1

        assert asyncio.run(notebook_cell()) == 42
        with pytest.raises(TimeoutError, match="not done after 0.05 s"):
            loop.run(asyncio.sleep(5), timeout=0.05)

        async def own_timeout() -> None:
            raise TimeoutError("the coroutine's own")

        with pytest.raises(TimeoutError, match="the coroutine's own"):
            loop.run(own_timeout(), timeout=5)
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.run(asyncio.sleep(0))


def test_client_settings_take_arguments_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "env-host:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "env-ns")
    from bert_eval.settings import get_settings, get_temporal_settings

    get_temporal_settings.cache_clear()
    get_settings.cache_clear()
    temporal, settings = client_settings(namespace="team-a", api_key="secret", runs_dir=tmp_path)
    assert (temporal.address, temporal.namespace, temporal.api_key and temporal.api_key.get_secret_value()) == (
        "env-host:7233",
        "team-a",
        "secret",
    )
    assert settings.runs_dir == tmp_path
    with pytest.raises(ValueError, match="task_queue_prefix: task-queue prefix 'Team A!'"):
        client_settings(task_queue_prefix="Team A!")
    with pytest.raises(ValueError, match="BERT_EVAL_TASK_QUEUE_PREFIX=team-b"):
        client_settings(task_queue_prefix="team-b")
    get_temporal_settings.cache_clear()
    get_settings.cache_clear()


def test_compare_names_a_side_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="b must be a run id"):
        compare("a-run", 42, runs_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"no runs under {tmp_path}"):
        compare("a-run", ["b-s1", "b-s2"], runs_dir=tmp_path)


def test_package_exports_load_on_first_use() -> None:
    for name in bert_eval.__all__:
        assert getattr(bert_eval, name) is not None, name
    importlib.import_module("bert_eval.compare")  # the module: the package's `compare` stays the function

    assert bert_eval.compare is compare and callable(bert_eval.compare)
    assert sys.modules["bert_eval.compare"].parse_side("x=a,b") == ("x", ["a", "b"])


def test_importing_bert_eval_loads_neither_temporal_nor_torch() -> None:
    started = time.monotonic()
    probe = "import sys, bert_eval; print(sorted(m for m in ('temporalio', 'torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", f"import bert_eval loaded {out.stdout} in {time.monotonic() - started:.1f}s"


def test_the_python_api_docs_hold_the_notebook_and_every_public_name() -> None:
    import nbformat

    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "python-api.md").read_text()
    notebook = nbformat.read(root / "tests" / "integration" / "notebooks" / "python_client.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.source in docs, f"docs/python-api.md lacks the notebook cell:\n{cell.source}"
    undocumented = [name for name in bert_eval.__all__ if f"`{name}" not in docs and f"`bert_eval.{name}`" not in docs]
    assert not undocumented, f"docs/python-api.md does not document {undocumented}"


def test_progress_bar_is_tqdm_where_installed_else_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bert_eval.client.progress import open_progress_bar

    runs = [RunStatus(run_id="a", phase=RunPhase.completed), RunStatus(run_id="b", phase=RunPhase.training)]
    bar = open_progress_bar("experiment e")
    bar.update(CoordinatorStatus(experiment_id="e", runs=runs), {})
    bar.close()
    assert "experiment e:  50%" in capsys.readouterr().err and type(bar).__name__ == "_TqdmBar"

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    bar = open_progress_bar("experiment e")
    bar.finish(_result())
    bar.note("waiting: no worker polls task queue 'x'")
    bar.close()
    assert type(bar).__name__ == "_RichBar" and "waiting: no worker polls task queue 'x'" in capsys.readouterr().out
