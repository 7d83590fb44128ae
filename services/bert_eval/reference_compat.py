"""The reference design's wire types ("BERT Evaluation Coordinator" on Temporal) and their mapping onto
bert-eval.

Clients of the reference design start `CoordinatorWorkflow` with
`{"configs": [CoordinatorWorkflowConfig, ...]}` and read back a list of `BertEvalResult`. Field names and
defaults here match that design, so such a client works unchanged against bert-eval's workers. Each config
becomes one bert-eval `RunSpec` (same canonical run ids, snapshots, checkpoints, reuse); anything bert-eval
cannot honour is refused with an error naming the config and the field. Pure pydantic: no Temporal, no
torch, no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bert_eval.core.records import EvalResult
from bert_eval.experiment import describe_validation_error
from bert_eval.spec import (
    DatasetSpec,
    EvalRequest,
    RunSpec,
    TaskType,
    TrainHyperparameters,
    duplicate_run_id,
    normalize_id,
)

__all__ = [
    "BertEvalRequest",
    "BertEvalResult",
    "BertFineTuneConfig",
    "CoordinatorWorkflowConfig",
    "CoordinatorWorkflowInput",
    "DatasetSnapshotRef",
    "ReferenceInputError",
    "ReferenceEvaluation",
    "ReferenceRun",
    "is_reference_input",
    "parse_reference_input",
    "reference_evaluation",
    "reference_result",
    "to_run_specs",
]

# bert-eval's snapshot ids are the first 16 hex digits of a content digest (core/data/snapshot.py).
_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{16}$")


class ReferenceInputError(ValueError):
    """The reference-shaped input is invalid; the message names the config and the field."""


class _Wire(BaseModel):
    # Unknown fields are refused, as in experiment files: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BertFineTuneConfig(_Wire):
    """The reference's fine-tuning config of one run: model, dataset, hyperparameters, row selection and
    column overrides, with the reference's defaults."""

    model_name: str = Field(default="bert-base-uncased", min_length=1)
    dataset_name: str = Field(default="glue", min_length=1)
    dataset_config_name: str | None = "sst2"
    num_epochs: float = Field(default=3, gt=0, le=1000)
    batch_size: int = Field(default=16, ge=1, le=4096)
    learning_rate: float = Field(default=5e-5, gt=0, lt=1)
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    use_gpu: bool = True
    max_train_samples: int | None = Field(default=2_000, ge=1)
    max_eval_samples: int | None = Field(default=1_000, ge=1)
    text_field: str | None = None
    text_pair_field: str | None = None
    label_field: str | None = None
    task_type: Literal["auto", "classification", "regression"] = "auto"
    shuffle_before_select: bool = True
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    run_id: str | None = None


class BertEvalRequest(_Wire):
    """The reference's evaluation request: a config's evaluation (split and rows), or a direct
    `BertEvalWorkflow` call evaluating an existing model (`model_path` or the run `run_id` names)."""

    run_id: str | None = None
    dataset_name: str = Field(default="glue", min_length=1)
    dataset_config_name: str | None = "sst2"
    split: str = "validation"
    max_eval_samples: int | None = Field(default=1_000, ge=1)
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    batch_size: int = Field(default=32, ge=1, le=4096)
    use_gpu: bool = True
    model_path: str | None = None
    seed: int = 42


class DatasetSnapshotRef(_Wire):
    """The reference's DatasetSnapshotResult. In bert-eval only `snapshot_id` matters: it pins the run to the
    snapshot with that content digest (the run fails if its selected rows hash differently)."""

    snapshot_id: str
    dataset_name: str | None = None
    dataset_config: str | None = None
    num_train_samples: int | None = None
    num_eval_samples: int | None = None
    data_hash: str | None = None
    snapshot_timestamp: str | None = None
    snapshot_path: str | None = None
    dataset_schema: dict[str, Any] | None = None


class CoordinatorWorkflowConfig(_Wire):
    """One config of the reference's coordinator input: a run to fine-tune and evaluate, optionally pinned
    to a snapshot."""

    run_id: str | None = None
    fine_tune_config: BertFineTuneConfig
    evaluation_config: BertEvalRequest = BertEvalRequest()
    dataset_snapshot: DatasetSnapshotRef | None = None


class CoordinatorWorkflowInput(_Wire):
    """The reference's coordinator input, `{"configs": [...]}` (1 to 1000 configs)."""

    configs: list[CoordinatorWorkflowConfig] = Field(min_length=1, max_length=1000)


class BertEvalResult(BaseModel):
    """One record per config, in the order given. The reference's six fields, then bert-eval's extras."""

    run_id: str
    dataset_name: str
    dataset_config_name: str | None
    split: str
    num_examples: int
    # Classification: the fraction of correct predictions. Regression: null (see `metrics`).
    accuracy: float | None
    metrics: dict[str, float] = {}
    reused: bool = False


class ReferenceRun(BaseModel):
    """A config mapped onto bert-eval: the run spec plus what the result and the snapshot pin need."""

    model_config = ConfigDict(frozen=True)

    spec: RunSpec
    dataset_name: str
    dataset_config_name: str | None
    snapshot_id: str | None = None  # from dataset_snapshot: the run must train on exactly this snapshot


def is_reference_input(payload: Any) -> bool:
    """The reference's coordinator input is a mapping whose only key is `configs`."""
    return isinstance(payload, dict) and "configs" in payload and "experiment" not in payload


def parse_reference_input(payload: Any) -> list[ReferenceRun]:
    """Validate a `{"configs": [...]}` payload and map it onto run specs with canonical, unique run ids."""
    try:
        parsed = CoordinatorWorkflowInput.model_validate(payload)
    except ValidationError as exc:
        raise ReferenceInputError(f"invalid CoordinatorWorkflow input: {describe_validation_error(exc)}") from None
    return to_run_specs(parsed)


def to_run_specs(request: CoordinatorWorkflowInput) -> list[ReferenceRun]:
    """Map each config onto a bert-eval run, in order; ReferenceInputError naming the config and the field
    when bert-eval cannot honour one, or when two configs share a run id."""
    runs = [_map_config(index, config) for index, config in enumerate(request.configs)]
    if (repeated := duplicate_run_id(run.spec.id for run in runs)) is not None:
        first, again, run_id = repeated
        raise ReferenceInputError(
            f"configs[{first}] and configs[{again}] share run_id {run_id!r}; "
            "run ids must be unique (give each config its own run_id, or change one config)"
        )
    return runs


def reference_result(
    run: ReferenceRun | ReferenceEvaluation, evaluation: EvalResult, *, reused: bool
) -> BertEvalResult:
    """The reference's result record of one evaluation (accuracy null for regression; every metric in
    `metrics`)."""
    return BertEvalResult(
        run_id=run.spec.id if isinstance(run, ReferenceRun) else evaluation.run_id,
        dataset_name=run.dataset_name,
        dataset_config_name=run.dataset_config_name,
        split=evaluation.split,
        num_examples=evaluation.examples,
        accuracy=evaluation.metrics.get("accuracy"),
        metrics=evaluation.metrics,
        reused=reused,
    )


class ReferenceEvaluation(BaseModel):
    """A reference `BertEvalRequest` (a direct BertEvalWorkflow call) mapped onto bert-eval: the model to
    resolve, the dataset and the evaluation. The model is evaluated at the sequence length it was trained
    with (its saved tokenizer records it), so `max_seq_length` and `seed` do not change the result."""

    model_config = ConfigDict(frozen=True)

    run_id: str | None
    model_path: str
    dataset: DatasetSpec
    request: EvalRequest
    dataset_name: str
    dataset_config_name: str | None


def reference_evaluation(request: BertEvalRequest) -> ReferenceEvaluation:
    """Validate a direct evaluation request: a model (`model_path`, or the run `run_id` names) and a split."""
    try:
        run_id = normalize_id(request.run_id) if request.run_id is not None else None
    except ValueError as exc:
        raise ReferenceInputError(f"run_id: {exc}") from None
    model_path = request.model_path or run_id
    if model_path is None:
        raise ReferenceInputError(
            "BertEvalRequest names no model: give model_path (./bert_runs/<run_id>, a run id, or a model directory "
            "inside the runs volume or the models mirror) or the run_id of a trained run"
        )
    try:
        dataset = DatasetSpec(**_dataset_source(request.dataset_name, request.dataset_config_name))
        evaluation = EvalRequest(
            split=request.split,
            max_eval_samples=request.max_eval_samples,
            batch_size=request.batch_size,
            use_gpu=request.use_gpu,
        )
    except ValidationError as exc:
        raise ReferenceInputError(f"invalid BertEvalRequest: {describe_validation_error(exc)}") from None
    return ReferenceEvaluation(
        run_id=run_id,
        model_path=model_path,
        dataset=dataset,
        request=evaluation,
        dataset_name=request.dataset_name,
        dataset_config_name=request.dataset_config_name,
    )


def _map_config(index: int, config: CoordinatorWorkflowConfig) -> ReferenceRun:
    tune, ev = config.fine_tune_config, config.evaluation_config
    run_id = _one_run_id(index, config)
    where = f"configs[{index}]" + (f" (run_id {run_id!r})" if run_id else "")

    def refuse(message: str) -> ReferenceInputError:
        return ReferenceInputError(f"{where}: {message}")

    if (ev.dataset_name, ev.dataset_config_name) != (tune.dataset_name, tune.dataset_config_name):
        raise refuse(
            f"evaluation_config dataset {_dataset_label(ev.dataset_name, ev.dataset_config_name)!r} differs from "
            f"fine_tune_config dataset {_dataset_label(tune.dataset_name, tune.dataset_config_name)!r}; bert-eval "
            "evaluates a run on a split of the dataset it trained on. Use the same dataset_name and "
            "dataset_config_name in both (and pick the split with evaluation_config.split)"
        )
    if ev.max_seq_length != tune.max_seq_length:
        raise refuse(
            f"evaluation_config.max_seq_length ({ev.max_seq_length}) differs from fine_tune_config.max_seq_length "
            f"({tune.max_seq_length}); bert-eval evaluates at the length the model was trained with. Set both to "
            "the same value"
        )
    if tune.max_eval_samples != ev.max_eval_samples:
        raise refuse(
            f"fine_tune_config.max_eval_samples ({tune.max_eval_samples}) differs from "
            f"evaluation_config.max_eval_samples ({ev.max_eval_samples}); bert-eval evaluates once, after "
            "training, on evaluation_config's rows. Set both to the same value"
        )
    if ev.model_path is not None:
        raise refuse(
            f"evaluation_config.model_path is set ({ev.model_path!r}); bert-eval always evaluates the run's own "
            "trained model (<runs-dir>/runs/<run_id>/model). Leave model_path unset"
        )
    if tune.text_pair_field is not None and tune.text_field is None:
        raise refuse("fine_tune_config.text_pair_field is set without text_field; set text_field too")

    snapshot_id = None
    if config.dataset_snapshot is not None:
        snapshot_id = config.dataset_snapshot.snapshot_id.strip().lower()
        if not _SNAPSHOT_ID.match(snapshot_id):
            raise refuse(
                f"dataset_snapshot.snapshot_id {config.dataset_snapshot.snapshot_id!r} is not a bert-eval snapshot "
                "id (16 hex digits: the content digest under <runs-dir>/snapshots/). Leave dataset_snapshot unset "
                "to let bert-eval snapshot the data, or pass the id of an existing snapshot"
            )
        pinned = config.dataset_snapshot
        if pinned.dataset_name is not None and (pinned.dataset_name, pinned.dataset_config) != (
            tune.dataset_name,
            tune.dataset_config_name,
        ):
            raise refuse(
                f"dataset_snapshot is of dataset {_dataset_label(pinned.dataset_name, pinned.dataset_config)!r} but "
                f"fine_tune_config trains on {_dataset_label(tune.dataset_name, tune.dataset_config_name)!r}"
            )

    text_columns = tuple(c for c in (tune.text_field, tune.text_pair_field) if c is not None) or None
    try:
        spec = RunSpec(
            run_id=run_id,
            model=tune.model_name,
            dataset=DatasetSpec(
                **_dataset_source(tune.dataset_name, tune.dataset_config_name),
                text_columns=text_columns,
                label_column=tune.label_field,
                task=None if tune.task_type == "auto" else TaskType(tune.task_type),
            ),
            train=TrainHyperparameters(
                epochs=tune.num_epochs,
                batch_size=tune.batch_size,
                learning_rate=tune.learning_rate,
                max_seq_length=tune.max_seq_length,
                max_train_samples=tune.max_train_samples,
                seed=tune.seed,
                shuffle_before_select=tune.shuffle_before_select,
                use_gpu=tune.use_gpu,
            ),
            primary_eval=EvalRequest(
                split=ev.split, max_eval_samples=ev.max_eval_samples, batch_size=ev.batch_size, use_gpu=ev.use_gpu
            ),
        ).with_canonical_id()
    except ValidationError as exc:
        raise refuse(describe_validation_error(exc)) from None
    return ReferenceRun(
        spec=spec, dataset_name=tune.dataset_name, dataset_config_name=tune.dataset_config_name, snapshot_id=snapshot_id
    )


def _one_run_id(index: int, config: CoordinatorWorkflowConfig) -> str | None:
    """The config's run id: wherever it is given, it must be the same id (after canonicalization)."""
    given = {
        "run_id": config.run_id,
        "fine_tune_config.run_id": config.fine_tune_config.run_id,
        "evaluation_config.run_id": config.evaluation_config.run_id,
    }
    canonical: dict[str, str] = {}
    for field, value in given.items():
        if value is None:
            continue
        try:
            canonical[field] = normalize_id(value)
        except ValueError as exc:
            raise ReferenceInputError(f"configs[{index}]: {field}: {exc}") from None
    if len(set(canonical.values())) > 1:
        listed = ", ".join(f"{field}={given[field]!r}" for field in canonical)
        raise ReferenceInputError(
            f"configs[{index}]: contradictory run ids ({listed}); give one run_id, or the same one everywhere"
        )
    return next(iter(canonical.values()), None)


def _dataset_source(name: str, config: str | None) -> dict[str, str | None]:
    # bert-eval spells GLUE tasks `glue/<task>` (the local mirror's layout): mapping onto that spelling gives
    # a reference config the same snapshot and derived run id as the equivalent experiment file.
    if name == "glue" and config:
        return {"name": f"glue/{config}", "config": None}
    return {"name": name, "config": config}


def _dataset_label(name: str, config: str | None) -> str:
    return f"{name}/{config}" if config else name
