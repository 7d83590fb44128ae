"""The `search:` section: what it accepts (the README's example, the packaged demo) and every bad input
refused before anything is submitted, in one line naming the field; sampling is Optuna's, seeded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bert_eval.core.search.sampling import suggest
from bert_eval.experiment import ExperimentFileError, load_experiment, parse_experiment
from bert_eval.search import max_steps, rung_steps
from bert_eval.spec import Scheduler, SearchSpec

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = {
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "dataset": "glue/sst2",
    "train": {"max_train_samples": 400, "batch_size": 16},
}
SPACE = {"train.learning_rate": {"loguniform": [1.0e-5, 2.0e-4]}}


def _search(**fields: object) -> dict:
    return {"defaults": TEMPLATE, "search": {"space": SPACE, "trials": 4, "scheduler": {"min_steps": 5}, **fields}}


def test_the_readme_search_example_and_the_packaged_demo_parse() -> None:
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "search:" in b)
    experiment = parse_experiment(yaml.safe_load(block), source="README")
    assert experiment.search is not None and experiment.search.sampler == "tpe" and experiment.search.trials == 12
    demo = load_experiment(REPO / "services/bert_eval/experiments/sst2-minilm-search.yaml")
    assert demo.id == "sst2-minilm-search" and demo.search is not None and demo.search.objective.holdout == 0.1
    assert rung_steps(demo.search.scheduler, max_steps(demo.runs[0].train, 1080)) == (8, 24, 34)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"space": {"train.learning_rate": {"lognormal": [1e-5, 1e-4]}}},
            "search.space.train.learning_rate: write one of {loguniform",
        ),
        (
            {"space": {"train.learning_rate": {"uniform": [1e-3, 1e-5]}}},
            "the range [0.001, 1e-05] is empty or reversed",
        ),
        ({"space": {"train.learning_rate": {"loguniform": [0.0, 1e-4]}}}, "loguniform: the range must be above 0"),
        (
            {"space": {"train.dropout": {"uniform": [0.0, 0.5]}}},
            "search.space.train.dropout: not a searchable train field",
        ),
        ({"space": {"model": {"choice": ["a", "b"]}}}, "search.space.model: not a searchable train field"),
        ({"space": {"train.batch_size": {"uniform": [8, 32]}}}, "batch_size is a whole number"),
        (
            {"space": {"train.learning_rate": {"uniform": [0.1, 2.0]}}},
            "2.0 is outside what train.learning_rate accepts",
        ),
        ({"trials": 0}, "search.trials: Input should be greater than or equal to 1"),
        (
            {"scheduler": {"reduction_factor": 1}},
            "search.scheduler.reduction_factor: Input should be greater than or equal to 2",
        ),
        (
            {"scheduler": {"min_steps": 23}},
            "search.scheduler.min_steps: 23 is not below the shortest trial's budget of 23 steps",
        ),
        ({"objective": {"metric": "bleu"}}, "metric: 'bleu' is not a metric bert-eval reports"),
        ({"objective": {"split": "validation"}}, "a search measures its objective on `search`"),
        ({"objective": {"holdout": 0.01}}, "400 training rows cannot give a search slice of 20+ rows"),
        ({"sampler": "grid"}, "sampler: grid needs every space entry to be a choice"),
        (
            {"sampler": "grid", "space": {"train.batch_size": {"choice": [8, 16]}}, "trials": 3},
            "trials: 3 is more than the grid's 2 points",
        ),
    ],
)
def test_bad_search_input_is_refused_naming_the_field(search: dict, message: str) -> None:
    document = (
        _search(**search)
        if "space" not in search
        else {"defaults": TEMPLATE, "search": {"trials": 4, "scheduler": {"min_steps": 5}, **search}}
    )
    with pytest.raises(ExperimentFileError) as refused:
        parse_experiment(document, source="exp.yaml")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_objective_the_task_does_not_report_is_refused_when_the_file_gives_the_task() -> None:
    regression = {**TEMPLATE, "dataset": {"name": "glue/stsb", "task": "regression"}}
    with pytest.raises(
        ExperimentFileError,
        match=r"search\.objective\.metric: regression runs report pearson, spearman, mse, not 'accuracy'",
    ):
        parse_experiment({"defaults": regression, "search": {"space": SPACE, "scheduler": {"min_steps": 5}}})
    parse_experiment(
        {
            "defaults": regression,
            "search": {"space": SPACE, "scheduler": {"min_steps": 5}, "objective": {"metric": "spearman"}},
        }
    )


def test_a_search_needs_one_template_run() -> None:
    with pytest.raises(ExperimentFileError, match=r"search: needs exactly one run, the trials' template \(got 2\)"):
        parse_experiment({**_search(), "grid": {"train.seed": [1, 2]}})


def test_bert_eval_run_refuses_a_bad_search_before_submitting(tmp_path: Path) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(_search(trials=0)))
    done = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(path)],
        env={**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1"},  # never contacted
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert " ".join(done.stderr.split()).startswith(
        f"error: {path}: search.trials: Input should be greater than or equal to 1"
    )


def test_sampling_is_seeded_per_trial_and_sees_only_the_history_given() -> None:
    search = SearchSpec.model_validate(
        {"space": {**SPACE, "train.batch_size": {"choice": [16, 32]}}, "sampler": "tpe", "seed": 5}
    )
    first = [suggest(search, i, []) for i in range(4)]
    assert first == [suggest(search, i, []) for i in range(4)]  # the same seed and index: the same trial
    assert len({tuple(p.values()) for p in first}) == 4  # trials sampled from the same history differ
    history = [(p, float(i), True) for i, p in enumerate(first)]
    assert suggest(search, 4, history) == suggest(search, 4, history)
    grid = SearchSpec.model_validate(
        {"space": {"train.batch_size": {"choice": [8, 16, 32]}}, "sampler": "grid", "trials": 3}
    )
    points: list = []
    for index in range(3):  # every earlier trial's point counts as taken, finished or not
        points.append((suggest(grid, index, points), None, False))
    assert sorted(p["train.batch_size"] for p, _, _ in points) == [8, 16, 32]


def test_rungs_are_min_steps_times_eta_to_the_k_then_the_budget() -> None:
    assert rung_steps(Scheduler(min_steps=4, reduction_factor=3), 34) == (4, 12, 34)
    assert rung_steps(Scheduler(min_steps=4, reduction_factor=3), 36) == (4, 12, 36)
    assert rung_steps(Scheduler(type="none"), 34) == (34,)


def test_the_readme_shows_the_demo_search_as_make_demo_search_runs_it() -> None:
    demo = (REPO / "services/bert_eval/experiments/sst2-minilm-search.yaml").read_text()
    shown = (
        (REPO / "README.md").read_text().split("```yaml\nexperiment_id: sst2-minilm-search\n", 1)[1].split("```", 1)[0]
    )
    assert "experiment_id: sst2-minilm-search\n" + shown == "".join(
        line for line in demo.splitlines(keepends=True) if not line.startswith("#")
    )
