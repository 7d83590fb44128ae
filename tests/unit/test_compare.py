"""`compare` on a runs directory of real evaluations: two runs, two configurations, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.evaluation import evaluated_run, saved_head_model
from support.specs import core_spec
from typer.testing import CliRunner

from bert_eval.cli import app
from bert_eval.compare import compare, parse_side
from bert_eval.core.evaluation.batched import load_eval_result
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import claim_run_dir
from bert_eval.spec import EvalRequest

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_dir: Path) -> Path:
    """Configurations `base` and `large`, one run per training seed (a different random head each), all
    evaluated on the same 64 rows; and `short`, evaluated on 32 of them."""
    root = tmp_path_factory.mktemp("compare")
    runs_dir = root / "runs-dir"
    for config, head_offset in (("base", 0), ("large", 10)):
        for seed in SEEDS:
            spec = core_spec(tiny_model_dir, f"{config}-s{seed}", seed=seed)
            claim_run_dir(RunLayout(runs_dir, spec.id), spec)  # records the spec, and so the seed
            model = saved_head_model(tiny_model_dir, root / spec.id, data_dir, seed=seed + head_offset)
            evaluated_run(spec, model, runs_dir, data_dir)
    short = core_spec(tiny_model_dir, "short").model_copy(update={"primary_eval": EvalRequest(max_eval_samples=32)})
    evaluated_run(short, saved_head_model(tiny_model_dir, root / "short", data_dir, seed=1), runs_dir, data_dir)
    return runs_dir


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, ["compare", *args])


def _accuracy(runs_dir: Path, run_id: str) -> float:
    return load_eval_result(RunLayout(runs_dir, run_id), "validation").metrics["accuracy"]


def test_two_runs_are_compared_over_their_evaluation_rows(runs: Path) -> None:
    result = _cli("base-s1", "large-s1", "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    sentence, *warnings = result.stdout.strip().splitlines()
    assert "base-s1" in sentence and "large-s1" in sentence and " on accuracy " in sentence
    assert "McNemar's test, 64 examples" in sentence

    result = _cli("base-s1", "large-s1", "--runs-dir", str(runs), "--json")
    record = json.loads(result.stdout)
    assert record["kind"] == "runs" and record["split"] == "validation" and record["examples"] == 64
    assert record["sentence"] == sentence and [f"warning: {flag}" for flag in record["flags"]] == warnings
    assert record["a_value"]["value"] == _accuracy(runs, "base-s1")
    assert record["difference"]["value"] == pytest.approx(_accuracy(runs, "base-s1") - _accuracy(runs, "large-s1"))
    assert record["difference"]["method"] == "Tango's score interval, 64 examples"
    assert record["mcnemar"]["p_value"] == record["p_value"]
    assert (
        record["mcnemar"]["a_only_correct"] + record["mcnemar"]["b_only_correct"] > 0
    )  # the runs disagree on some rows

    # The same comparison through the function: the record the command printed.
    assert compare(runs, ["base-s1"], ["large-s1"]).to_json() == record


def test_two_configurations_are_compared_over_their_recorded_seeds(runs: Path) -> None:
    result = _cli("base-s3,base-s1,base-s2", "ours=large-s1,large-s2,large-s3", "--json", "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["kind"] == "configs" and (record["a"]["name"], record["b"]["name"]) == ("base", "ours")
    # Each value with the training seed its run's spec records, in the order given.
    assert record["a"]["seeds"] == [3, 1, 2] and record["b"]["seeds"] == [1, 2, 3]
    assert record["a"]["values"] == [_accuracy(runs, f"base-s{s}") for s in (3, 1, 2)]
    # Three seed pairs are too few for the exact paired test: compared unpaired, and the sentence says why.
    assert record["paired_by"] == "unpaired" and record["test"] == "Welch's t-test, 3 and 3 seeds, unpaired"
    assert (
        "the exact paired test cannot reach p < 0.05 with 3 seed pairs that differ (it needs 6)" in record["sentence"]
    )
    # Each side's interval over seeds and evaluation sets, from the kept predictions.
    interval = record["a"]["with_test_set"]
    assert interval["method"].startswith("seeds then examples: 3 seeds, 64 examples")
    assert interval["low"] < record["a"]["mean"] < interval["high"]


def test_a_comparison_no_test_can_support_says_so(runs: Path) -> None:
    result = _cli("base-s1", "large-s1,large-s2", "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    sentence = result.stdout.splitlines()[0]
    assert sentence.startswith("cannot tell whether base-s1 or large is better on accuracy: base-s1 has one seed")
    assert "no p-value" in sentence and "p = " not in sentence


def test_plan_says_how_many_seeds_from_the_measured_spread(runs: Path) -> None:
    result = CliRunner().invoke(
        app, ["plan", "large-s1,large-s2,large-s3", "--gap", "0.02", "--runs-dir", str(runs), "--json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    values = [_accuracy(runs, f"large-s{s}") for s in SEEDS]
    assert plan["metric"] == "accuracy" and plan["observed_seeds"] == 3
    assert plan["std"] == pytest.approx(float(np.std(values, ddof=1)))
    assert plan["seeds"] is None or plan["seeds"] >= 2

    given = CliRunner().invoke(app, ["plan", "--std", "0.01", "--gap", "0.01"])
    assert given.exit_code == 0 and given.stdout.startswith(
        "to detect a gap of 0.01 with 80% power (Welch's test, p < 0.05) at a seed std of 0.01: "
        "17 seeds per configuration"
    )

    once = CliRunner().invoke(app, ["plan", "base-s1", "--runs-dir", str(runs)])
    assert once.exit_code == 2 and once.stdout == "" and once.stderr.count("\n") == 1
    assert (
        "configuration base-s1 has 1 run: a seed standard deviation needs 2 or more; run more seeds or give --std"
        in once.stderr
    )


@pytest.mark.parametrize(
    ("a", "b", "extra", "message"),
    [
        ("base-s1", "nope", [], "run nope has no evaluation of split 'validation'"),
        ("base-s1", "short", [], "runs base-s1 and short were evaluated on different rows"),
        (
            "base-s1",
            "large-s1",
            ["--split", "test"],
            "run base-s1 has no evaluation of split 'test' (it has eval-validation.json)",
        ),
        ("base-s1", "large-s1", ["--metric", "pearson"], "run base-s1: classification runs have no metric 'pearson'"),
        ("base-s1,base-s1", "large-s1,large-s2", [], "side A lists run base-s1 more than once"),
        ("Bad/Id", "large-s1", [], "invalid run_id 'Bad/Id'"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_cause(
    runs: Path, a: str, b: str, extra: list[str], message: str
) -> None:
    result = _cli(a, b, "--runs-dir", str(runs), *extra)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_runs_directory_without_runs_is_named(tmp_path: Path) -> None:
    result = _cli("a", "b", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and f"no runs under {tmp_path}" in result.stderr


def test_a_side_is_a_run_or_a_named_group_of_runs() -> None:
    assert parse_side("run-1") == (None, ["run-1"])
    assert parse_side("base=r1, r2,") == ("base", ["r1", "r2"])


def test_an_experiment_summary_marks_intervals_and_flags(runs: Path) -> None:
    """The coordinator's summary over the same runs: both intervals per configuration, the marking, and a flag
    for every run that predicts one class."""
    from bert_eval.core.evaluation.predictions import load_predictions
    from bert_eval.core.statistics.configs import constant_prediction
    from bert_eval.core.statistics.summary import RunOutcome, summarize_runs

    outcomes = []
    for config in ("base", "large"):
        for seed in SEEDS:
            run_id = f"{config}-s{seed}"
            evaluation = load_eval_result(RunLayout(runs, run_id), "validation")
            assert evaluation is not None
            outcomes.append(RunOutcome(run_id=run_id, config=config, dataset="sst2", evaluation=evaluation))
    summary = summarize_runs(outcomes)
    configs = {c.config: c for c in summary.configs}
    assert sorted(configs) == ["base", "large"] and [c.mark for c in configs.values()].count("best") == 1
    for config in configs.values():
        assert config.n == 3 and config.population_low is not None and config.population_high is not None
        assert config.population_low < config.mean < config.population_high
    one_class = [
        flag
        for outcome in outcomes
        if (flag := constant_prediction(load_predictions(RunLayout(runs, outcome.run_id), "validation"))) is not None
    ]
    assert [flag for flag in summary.flags if flag.startswith("run ")] == one_class
    other = next(c for c in configs.values() if c.mark != "best")
    within_noise = [flag for flag in summary.flags if "within seed noise" in flag]
    assert bool(within_noise) == (other.mark == "not significantly worse")


def test_run_prints_the_summarys_flags_and_json_gives_each_run_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    from bert_eval.cli import _json_records, _print_results
    from bert_eval.core.records import ExperimentSummary
    from bert_eval.temporal.payloads import ExperimentResult, RunResult

    one_class = "run r1 predicts class '1' for all 64 rows of validation: ...; train longer"
    noise = "all 2 configurations are within seed noise of each other on accuracy (...)"
    result = ExperimentResult(
        experiment_id="e",
        runs=[RunResult(run_id=run_id, status="completed", metrics={"accuracy": 0.5}) for run_id in ("r1", "r10")],
        summary=ExperimentSummary(split="validation", flags=[one_class, noise]),
    )
    records = {record["run_id"]: record for record in _json_records(result)}
    assert records["r1"]["flags"] == [one_class, noise] and records["r10"]["flags"] == [noise]
    _print_results(result)
    out = capsys.readouterr().out
    assert "warning: run r1 predicts class '1'" in out and "warning: all 2 configurations are within seed noise" in out
