"""The Python client (`bert_eval.Client`, `bert_eval.AsyncClient`) against a real dev server and real
workers: a notebook executed end to end in a Jupyter kernel, the DataFrames checked against the run
records and an independent computation, the async client, cancellation and the errors users see."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from scipy import stats
from support.harness import Stack
from support.specs import tiny_run

import bert_eval

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOK = Path(__file__).parent / "notebooks" / "python_client.ipynb"


def _outputs(cell: nbformat.NotebookNode) -> str:
    """A cell's text: its streams and the plain-text form of what it displays."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_submits_waits_and_compares(
    served: Stack, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in served.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NOTEBOOK_MODEL", str(tiny_model_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(served.runs_dir.parent)}}
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    connect, submit, runs, configs, compared, predicted, status = code

    assert "namespace=" + served.namespace in _outputs(connect)
    [shown] = [o for o in submit.outputs if o["output_type"] == "execute_result"]
    assert ast.literal_eval(shown["data"]["text/plain"]) == [
        (f"{c}-s{s}", "completed") for c in ("slow", "fast") for s in (7, 8)
    ]
    # In Jupyter the progress bar is a widget (tqdm.auto with ipywidgets), shown in the submitting cell and
    # updated to its end: 4 runs out of 4.
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in submit.outputs)
    widgets = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    [bar] = [w["state"] for w in widgets if w["model_name"] == "FloatProgressModel"]
    assert (bar["value"], bar["max"]) == (4, 4)
    assert any("finished" in w["state"].get("value", "") for w in widgets if w["model_name"] == "HTMLModel")
    assert "slow-s8" in _outputs(runs) and "accuracy_low" in _outputs(runs)
    assert "slow" in _outputs(configs) and "fast" in _outputs(configs) and "best" in _outputs(configs)
    sentence = _outputs(compared)
    assert "slow" in sentence and "fast" in sentence
    assert "a gripping, funny and moving film" in _outputs(predicted) and "confidence" in _outputs(predicted)
    assert _outputs(status) == "'completed'"

    # The same experiment from another process's client, called inside a running event loop (as a
    # notebook's cells are): its DataFrames agree with the run records and an independent computation.
    async def inside_a_loop() -> None:
        with bert_eval.Client(served.address, namespace=served.namespace, runs_dir=served.runs_dir) as client:
            _check_frames(client.experiment("notebook-lr"), served.runs_dir)

    asyncio.run(inside_a_loop())


def _check_frames(handle: bert_eval.ExperimentHandle, runs_dir: Path) -> None:
    result = handle.results()
    runs = handle.runs_df().set_index("run_id")
    assert list(runs.index) == [f"{c}-s{s}" for c in ("slow", "fast") for s in (7, 8)]
    assert list(runs["seed"]) == [7, 8, 7, 8] and list(runs["train.learning_rate"]) == [1e-5, 1e-5, 3e-3, 3e-3]
    assert set(runs["state"]) == {"completed"} and list(runs["resumes"]) == [0, 0, 0, 0]
    for run_id, row in runs.iterrows():
        on_disk = json.loads((runs_dir / "runs" / str(run_id) / "eval-validation.json").read_text())
        assert row["accuracy"] == pytest.approx(on_disk["metrics"]["accuracy"])
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
        assert row["train_seconds"] > 0 and row["steps"] == 4

    configs = handle.configs_df().set_index("config")
    assert sorted(configs.index) == ["fast", "slow"] and int(configs["best"].sum()) == 1
    for name, config in configs.iterrows():
        values = runs.loc[runs["config"] == name, "accuracy"].to_numpy()
        assert config["n"] == 2 and config["mean"] == pytest.approx(values.mean())
        assert config["std"] == pytest.approx(values.std(ddof=1))
        if values.std() > 0:
            half = stats.t.ppf(0.975, df=1) * values.std(ddof=1) / np.sqrt(2)
            assert (config["low"], config["high"]) == (
                pytest.approx(values.mean() - half),
                pytest.approx(values.mean() + half),
            )
        assert config["not_worse"] == (config["mark"] in ("best", "not significantly worse"))

    cells = handle.cells_df()
    assert list(cells["run_id"]) == list(runs.index) and cells["primary"].all() and set(cells["examples"]) == {96}
    assert handle.trials_df().empty
    assert result.summary is not None and handle.status().done

    comparison = bert_eval.compare("slow=slow-s7,slow-s8", ["fast-s7", "fast-s8"], runs_dir=runs_dir)
    record = comparison.to_dict()
    assert record["kind"] == "configs" and record["sentence"] == comparison.sentence and record["split"] == "validation"


def test_async_client_cancel_and_errors(served: Stack, tiny_model_dir: Path) -> None:
    long_run = tiny_run(tiny_model_dir, "client-long", max_train_samples=2000, batch_size=8, checkpoint_every_steps=20)

    async def scenario() -> None:
        client = await bert_eval.AsyncClient.connect(
            served.address, namespace=served.namespace, runs_dir=served.runs_dir
        )
        assert await client.missing_workers() == []
        handle = await client.submit({"experiment_id": "client-cancel", "runs": [long_run]})
        again = await client.submit({"experiment_id": "client-cancel", "runs": [long_run]})
        assert again.workflow.id == handle.workflow.id  # resubmitting attaches to the running experiment
        status = await handle.status()
        assert status.state == "running" and not status.done
        await handle.cancel()
        with pytest.raises(bert_eval.ExperimentFailedError, match="client-cancel"):
            await handle.wait(timeout=120)
        assert (await (await client.experiment("client-cancel")).status()).state == "canceled"
        submitted = await (await client.experiment("client-cancel")).experiment()
        assert submitted is not None and submitted.runs[0].id == "client-long"

        with pytest.raises(ValueError, match="no experiment 'never-submitted'"):
            await client.experiment("never-submitted")
        with pytest.raises(bert_eval.PredictionError, match="client-long"):
            await client.predict("client-long", "a text")  # cancelled before its final model
        with pytest.raises(bert_eval.ExperimentFileError, match="runs"):
            await client.submit({"experiment_id": "client-bad", "runs": []})

    asyncio.run(scenario())


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    from support.ports import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(bert_eval.ClientConnectionError, match=f"cannot reach Temporal at {address}"):
        bert_eval.Client(address, runs_dir=tmp_path)


def test_a_search_gives_one_trials_row_per_trial(served: Stack, tiny_model_dir: Path) -> None:
    template = tiny_run(
        tiny_model_dir, "client-search", max_train_samples=160, checkpoint_every_steps=None, eval_samples=64
    )
    template.pop("run_id")
    space = {"train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]}, "train.warmup_ratio": {"uniform": [0.0, 0.2]}}
    search = {
        "space": space,
        "trials": 3,
        "max_concurrent": 3,
        "seed": 3,
        "objective": {"metric": "accuracy", "holdout": 0.2},
        "scheduler": {"type": "asha", "min_steps": 3, "reduction_factor": 3},
    }
    with bert_eval.Client(served.address, namespace=served.namespace, runs_dir=served.runs_dir) as client:
        handle = client.submit({"experiment_id": "client-search", "defaults": template, "search": search})
        result = handle.wait(progress=True, timeout=600)
        trials = handle.trials_df().set_index("trial")
        runs = handle.runs_df().set_index("run_id")

    assert result.search is not None and result.search.best is not None
    assert list(trials.index) == [0, 1, 2]
    for record in result.search.trials:
        row = trials.loc[record.trial]
        assert row["run_id"] == record.run_id and row["state"] == record.state.value and row["rung"] == record.rung
        assert row["train.learning_rate"] == record.params["train.learning_rate"] and row["steps"] == record.steps
        assert row["best"] == (record.run_id == result.search.best)
    assert int(trials["best"].sum()) == 1 and trials.loc[trials["best"], "state"].item() == "completed"
    best = trials.loc[trials["best"]].iloc[0]
    assert best["accuracy"] == pytest.approx(runs.loc[best["run_id"], "accuracy"])
    assert runs.loc[best["run_id"], "train.learning_rate"] == best["train.learning_rate"]
