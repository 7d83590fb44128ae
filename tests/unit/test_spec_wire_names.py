"""`RunSpec.primary_eval` / `extra_evals` are Python names only: the YAML key, stored specs, workflow payloads
and fingerprints keep `eval` / `evals`, so recorded histories, run directories and derived run ids stay valid."""

from __future__ import annotations

import json

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

from bert_eval.spec import EvalRequest, RunSpec
from bert_eval.temporal.payloads import TrainingInput

DOCUMENT = {
    "run_id": "wire",
    "model": "m",
    "dataset": "glue/sst2",
    "eval": [{"split": "validation", "max_eval_samples": 8}, {"dataset": "glue/mrpc", "split": "test"}],
}


def test_eval_written_as_a_list_is_the_primary_evaluation_then_the_extra_ones() -> None:
    spec = RunSpec.model_validate(DOCUMENT)
    assert spec.primary_eval == EvalRequest(split="validation", max_eval_samples=8)
    assert [e.split for e in spec.extra_evals] == ["test"]
    assert spec.evaluations == (spec.primary_eval, *spec.extra_evals)


def test_a_stored_spec_keeps_the_keys_eval_and_evals() -> None:
    stored = RunSpec.model_validate(DOCUMENT).model_dump(mode="json")
    assert {"eval", "evals"} <= set(stored) and not {"primary_eval", "extra_evals"} & set(stored)
    assert stored["eval"]["max_eval_samples"] == 8 and stored["evals"][0]["split"] == "test"
    assert RunSpec.model_validate(stored) == RunSpec.model_validate(DOCUMENT)


def test_a_workflow_payload_keeps_the_keys_eval_and_evals() -> None:
    spec = RunSpec.model_validate(DOCUMENT)
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([TrainingInput(experiment_id="e", run=spec)])
    run = json.loads(payload.data)["run"]
    assert {"eval", "evals"} <= set(run) and not {"primary_eval", "extra_evals"} & set(run)
    [decoded] = converter.from_payloads([payload], [TrainingInput])
    assert decoded.run == spec


def test_the_fingerprint_form_keys_the_primary_evaluation_eval_without_its_placement() -> None:
    spec = RunSpec.model_validate({**DOCUMENT, "eval": {"split": "test", "use_gpu": False}})
    form = spec.fingerprint_form()
    assert form["eval"]["split"] == "test" and "use_gpu" not in form["eval"]
    assert not {"evals", "primary_eval", "extra_evals"} & set(form)


def test_the_field_names_are_accepted_too() -> None:
    spec = RunSpec(model="m", dataset="glue/sst2", primary_eval=EvalRequest(split="test"))
    assert spec == RunSpec.model_validate({"model": "m", "dataset": "glue/sst2", "eval": {"split": "test"}})


def test_a_copy_updated_under_an_alias_is_refused() -> None:
    """pydantic's model_copy does not validate: `update={"eval": ...}` would leave the primary evaluation
    unchanged and set an unused attribute beside it."""
    spec = RunSpec.model_validate(DOCUMENT)
    with pytest.raises(TypeError, match="no field 'eval'"):
        spec.model_copy(update={"eval": EvalRequest(max_eval_samples=32)})
    copied = spec.model_copy(update={"primary_eval": EvalRequest(max_eval_samples=32)})
    assert copied.primary_eval.max_eval_samples == 32
