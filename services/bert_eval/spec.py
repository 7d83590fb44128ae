"""What a user asks for: runs, experiments, their ids and fingerprints.

Plain pydantic (no torch, no I/O): the CLI, the reference-design mapping, workflows (through the
sandbox) and the core all read these types. A run's fingerprint is the digest of everything that
determines its result; it names run directories and derived run ids, so it must stay stable across
releases (see `RunSpec.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ID_PATTERN",
    "LOWER_IS_BETTER",
    "RUN_MODEL_PREFIX",
    "DatasetSpec",
    "EvalRequest",
    "Experiment",
    "Holdout",
    "MlflowRegistration",
    "MlflowTracking",
    "REPORT_TO_INTEGRATIONS",
    "RegisterSpec",
    "RunSpec",
    "SEARCHABLE_FIELDS",
    "SEARCH_METRICS",
    "SEARCH_MIN_HOLDOUT_ROWS",
    "Distribution",
    "Objective",
    "Scheduler",
    "SearchSpec",
    "TaskType",
    "TrackingSpec",
    "TrainHyperparameters",
    "check_tracking_uri_form",
    "digest",
    "duplicate_run_id",
    "higher_is_better",
    "normalize_id",
    "short",
]

# `model: {run: RUN_ID}` is held as this prefix and the run id.
RUN_MODEL_PREFIX = "run:"

# A run id becomes a directory name, a workflow id and a Kubernetes label value:
# lowercase DNS-label-ish, at most 63 characters, no path separators.
ID_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


# How much of a user's value an error message quotes.
_QUOTE_CHARS = 60


def short(value: Any, limit: int = _QUOTE_CHARS) -> str:
    """`repr(value)` cut to about `limit` characters, saying how long the whole was: error messages quote a
    user's value, never all of it. Long containers are summarized without rendering them."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value)} entries"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def normalize_id(value: str, *, what: str = "run_id") -> str:
    """Canonical form of a run or experiment id (trimmed, lowercase), or ValueError naming the cause."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    canonical = value.strip().lower()
    if not ID_PATTERN.match(canonical) or ".." in canonical:
        raise ValueError(
            f"invalid {what} {short(value, 70)}: use 1-63 characters from a-z, 0-9, '.', '_', '-', "
            "starting and ending with a letter or digit (it becomes a directory and workflow id)"
        )
    return canonical


def duplicate_run_id(run_ids: Iterable[str]) -> tuple[int, int, str] | None:
    """The first run id given twice, as (index of its first use, index of the repeat, id); None if all differ."""
    seen: dict[str, int] = {}
    for index, run_id in enumerate(run_ids):
        if run_id in seen:
            return seen[run_id], index, run_id
        seen[run_id] = index
    return None


def digest(payload: Any, length: int = 8) -> str:
    """The first `length` hex digits of the SHA-256 of `payload` as canonical JSON (sorted keys, no spaces,
    non-JSON values via `str`): equal payloads give equal digests across processes and releases."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# The fields (per nested section) that RunSpec had when fingerprints were first written to run
# directories. Frozen: never add to it. New fields enter a fingerprint only when set to a non-default value,
# so their default must reproduce the behaviour of the release before them.
_FINGERPRINT_V1_FIELDS: dict[str, Any] = {
    "model": None,
    "dataset": {"name", "path", "config", "text_columns", "label_column", "task", "train_split"},
    "train": {
        "epochs",
        "batch_size",
        "learning_rate",
        "weight_decay",
        "warmup_ratio",
        "max_seq_length",
        "max_train_samples",
        "seed",
        "checkpoint_every_steps",
        "checkpoint_every_seconds",
        "keep_checkpoints",
        "logging_steps",
    },
    "eval": {"split", "max_eval_samples", "batch_size"},
}


# First-release fields whose default has changed since, with the first release's default. A spec that
# leaves one at today's default is fingerprinted with the old value, so its fingerprint (and run directory,
# derived run id) stays what it was: these defaults changed how a run is executed (checkpoint cadence,
# evaluation batch size), not what it computes.
_FINGERPRINT_V1_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {"checkpoint_every_steps": 50},
    "eval": {"batch_size": 64},
}
# Defaults of releases between the first and today. A spec is stored (spec.json, workflow inputs in
# flight during an upgrade) with every field written out, so a run submitted then holds that release's
# default explicitly; it is fingerprinted like today's default, as it was then.
_FINGERPRINT_FORMER_DEFAULTS: dict[str, dict[str, set[Any]]] = {
    "eval": {"batch_size": {256}},
}


def _canonical(full: dict[str, Any], explicit: dict[str, Any], frozen: dict[str, Any] | set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in full.items():
        if key in frozen:
            nested = frozen[key] if isinstance(frozen, dict) else None
            if nested is not None and isinstance(value, dict):
                out[key] = _canonical(value, explicit.get(key) or {}, nested)
            else:
                out[key] = value
        elif key in explicit:
            out[key] = value
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any) -> Any:
        """A boolean where a number belongs (`batch_size: true` would be 1) and NaN or infinity (which a
        bound check would misreport) are refused, naming the field."""
        if not isinstance(value, dict):
            return value
        for name, given in value.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None:
                continue
            numeric = _accepts(field.annotation, int) or _accepts(field.annotation, float)
            if isinstance(given, bool) and numeric and not _accepts(field.annotation, bool):
                raise ValueError(f"{name}: {given} is a boolean; give a number")
            if isinstance(given, float) and not math.isfinite(given):
                named = "NaN (not a number)" if math.isnan(given) else f"{given}, not a finite number"
                raise ValueError(f"{name}: {named}; give a number")
        return value


def _accepts(annotation: Any, kind: type) -> bool:
    """Whether a field's annotation admits `kind` itself (not just a type `kind` converts to)."""
    if annotation is kind:
        return True
    arguments = get_args(annotation)
    return any(_accepts(argument, kind) for argument in arguments) if arguments else annotation is Any


class TaskType(str, Enum):
    """What a dataset's label asks of the model: a class (`classification`) or a number (`regression`)."""

    classification = "classification"
    regression = "regression"


class DatasetSpec(_Strict):
    """Where the data comes from and, optionally, how to read it (inferred when absent)."""

    name: str | None = Field(default=None, description="hub name, e.g. glue/sst2")
    path: str | None = Field(default=None, description="local directory with train/validation files")
    config: str | None = Field(default=None, description="hub dataset configuration")
    text_columns: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=2)
    label_column: str | None = None
    task: TaskType | None = None
    train_split: str = "train"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DatasetSpec:
        if (self.name is None) == (self.path is None):
            raise ValueError("dataset needs exactly one of 'name' (hub name) or 'path' (local directory)")
        return self

    @property
    def label(self) -> str:
        """The dataset as a person names it: the hub name, else the local directory."""
        return self.name or self.path or ""


# transformers' integrations (`report_to` of TrainingArguments) a run may report to.
REPORT_TO_INTEGRATIONS = (
    "azure_ml",
    "clearml",
    "codecarbon",
    "comet_ml",
    "dagshub",
    "dvclive",
    "flyte",
    "kubeflow",
    "mlflow",
    "neptune",
    "swanlab",
    "tensorboard",
    "trackio",
    "wandb",
)


class TrainHyperparameters(_Strict):
    """`train:`: how a run fine-tunes (optimizer, schedule, rows, checkpoints, speed knobs). The speed knobs
    and `use_gpu`/`report_to` change where and how fast a run trains, not what it computes."""

    epochs: float = Field(default=1.0, gt=0, le=1000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    learning_rate: float = Field(default=5e-5, gt=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, lt=1)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    max_train_samples: int | None = Field(default=None, ge=1)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    # Checkpoints are time-based by default (a step count means very different wall times on a CPU and a
    # GPU); set checkpoint_every_steps to also save every N steps. Neither changes a run's result.
    checkpoint_every_steps: int | None = Field(default=None, ge=1)
    checkpoint_every_seconds: float | None = Field(
        default=300.0, gt=0, description="checkpoint when this much time passed since the last one"
    )
    keep_checkpoints: int = Field(default=2, ge=1, le=100)
    # Progress log lines (and the one host read of the loss) every N steps; the history still holds every
    # step's loss, and the summary's final_loss is the mean over the last N steps.
    logging_steps: int = Field(default=10, ge=1)
    # max_train_samples takes a seeded random subset; false takes the first N rows instead.
    shuffle_before_select: bool = True
    # False: train on CPU even on a GPU worker (where the run executes, not what it computes).
    use_gpu: bool = True
    # --- speed knobs; each can be turned off (core/training/arguments.py applies them per device) ---
    dynamic_padding: bool = Field(
        default=True,
        description="pad each batch to its longest row (CUDA: to a multiple of 8); off: pad to max_seq_length",
    )
    group_by_length: bool = Field(default=True, description="batch rows of similar length (seeded, resume-exact)")
    bf16: bool = Field(default=True, description="bf16 autocast on CUDA devices that support it (never on CPU)")
    fused_optimizer: bool = Field(
        default=True, description="fused AdamW kernel (CUDA and CPU); false: the per-tensor AdamW loop"
    )
    torch_compile: bool = Field(
        default=False, description="torch.compile the model (long warm-up; pays off on long GPU runs)"
    )
    dataloader_workers: int | None = Field(
        default=None, ge=0, le=64, description="None: 2 on CUDA (pinned memory), 0 on CPU"
    )
    cache_tokenization: bool = Field(
        default=True, description="tokenize once per snapshot+tokenizer+max_seq_length, cached beside the snapshot"
    )
    background_checkpoints: bool = Field(
        default=True, description="copy state to host memory, write and fsync it off the training thread"
    )
    # The Trainer's own experiment-tracker integrations, on the training worker (where the run executes and
    # what it reports to, not what it computes: left out of the fingerprint).
    report_to: tuple[str, ...] = Field(default=(), description="Trainer integrations, e.g. [wandb]; empty: none")

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_integrations(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if names in ("none", ["none"], None):
            return ()
        for name in names if isinstance(names, (list, tuple)) else ():
            if name not in REPORT_TO_INTEGRATIONS:
                raise ValueError(
                    f"report_to: {name!r} is not an integration of the Trainer; "
                    f"choose from {', '.join(REPORT_TO_INTEGRATIONS)}"
                )
        return names


class EvalRequest(_Strict):
    """`eval:`: one evaluation of a run's model: which split (of the run's own dataset, or of `dataset`),
    how many rows, and how to batch them (batching never changes the metrics)."""

    # Another dataset to evaluate on (a cell of the evaluation matrix); None: the run's own dataset.
    dataset: DatasetSpec | None = None
    split: str = Field(default="validation", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    max_eval_samples: int | None = Field(default=None, ge=1)
    # Rows are sorted by length and padded per batch, so a batch costs no accuracy however large; what
    # suits a device differs (core/evaluation/batched.py: eval_batch_size).
    batch_size: int | None = Field(default=None, ge=1, le=4096, description="None: 256 on CUDA, 64 on CPU")
    sort_by_length: bool = Field(
        default=True, description="evaluate rows in length order (results are put back in order)"
    )
    dynamic_padding: bool = Field(
        default=True, description="pad each batch to its longest row (on CUDA: rounded up to a multiple of 8)"
    )
    bf16: bool = Field(default=True, description="bf16 autocast on CUDA devices that support it (never on CPU)")
    use_gpu: bool = True  # False: evaluate on CPU even on a GPU worker


class Holdout(_Strict):
    """Training rows held out (a seeded random `fraction` of the selected ones) as the snapshot's `search`
    table: a search's trials train on the rest and are compared on these."""

    fraction: float = Field(gt=0, le=0.5)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


# Fields that say where a run executes (or reports to), not what it computes: left out of its fingerprint.
# Keyed by field name (what `model_dump(exclude=...)` takes).
_PLACEMENT_FIELDS = {"train": {"use_gpu", "report_to"}, "primary_eval": {"use_gpu"}}


class RunSpec(_Strict):
    """One fine-tune + evaluation run.

    Its evaluations are `primary_eval` and `extra_evals` in Python, and `eval`/`evals` on the wire and on
    disk (the YAML key, spec.json, workflow payloads, the fingerprint): the fields are aliased, and dumped
    by alias.
    """

    # Read and written under the aliases `eval`/`evals` (the keys of every stored spec and recorded history);
    # the field names are accepted too.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    run_id: str | None = None
    # The configuration this run is a replicate of (`seeds:` gives every seed's run the same one); statistics
    # over seeds are per configuration. A label, not part of what the run computes.
    config: str | None = None
    # A hub name, a local directory, or `run:<run_id>` (written `model: {run: RUN_ID}`: another run's final
    # model, for eval-only runs).
    model: str = Field(min_length=1, max_length=512)
    dataset: DatasetSpec
    train: TrainHyperparameters = TrainHyperparameters()
    # Evaluate the model as given, without training (written `train: null`).
    eval_only: bool = False
    # The evaluation that is the run's result (`eval:`, or the first entry of `eval:` written as a list).
    primary_eval: EvalRequest = Field(default=EvalRequest(), alias="eval")
    # More evaluations of the same model (the rest of `eval:` written as a list). Each (model, dataset,
    # split) cell is evaluated once and reused, and they are not part of the fingerprint: adding one to a
    # finished experiment evaluates the new cells and trains nothing.
    extra_evals: tuple[EvalRequest, ...] = Field(default=(), alias="evals")
    # Set on a search's trials (search.py); a run given one trains without those rows.
    holdout: Holdout | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, value: Any) -> Any:
        """`eval:` as a list, `train: null`, `model: {run: RUN_ID}`."""
        if not isinstance(value, dict):
            return value
        value = dict(value)
        if isinstance(value.get("eval"), list):
            entries = value["eval"]
            if not entries:
                raise ValueError("eval: an empty list; give at least one evaluation (e.g. [{split: validation}])")
            value["eval"], value["evals"] = entries[0], (*entries[1:], *value.get("evals", ()))
        if "train" in value and value["train"] is None:
            del value["train"]
            value["eval_only"] = True
        model = value.get("model")
        if isinstance(model, dict):
            if set(model) != {"run"} or not isinstance(model["run"], str):
                raise ValueError(
                    f"model: a mapping must be {{run: RUN_ID}} (another run's final model), got {short(model)}"
                )
            value["model"] = RUN_MODEL_PREFIX + normalize_id(model["run"], what="model.run")
        return value

    @model_validator(mode="after")
    def _run_models_are_evaluated_only(self) -> RunSpec:
        if self.model.startswith(RUN_MODEL_PREFIX) and not self.eval_only:
            raise ValueError(
                f"model: {{run: {self.model.removeprefix(RUN_MODEL_PREFIX)}}} evaluates another run's final model; "
                "set train: null (an eval-only run)"
            )
        if self.primary_eval.dataset is not None and not self.eval_only:
            raise ValueError(
                "eval: the first evaluation of a trained run is on its own dataset (a split of it); list evaluations "
                "on other datasets after it"
            )
        return self

    @property
    def evaluations(self) -> tuple[EvalRequest, ...]:
        """Every evaluation of the run, the primary one first."""
        return (self.primary_eval, *self.extra_evals)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> RunSpec:
        """A copy with `update`'s fields replaced. Keys are field names (`primary_eval`, not the alias `eval`):
        pydantic's copy does not validate, so an alias or a misspelt key would be set beside the field, unused;
        here it raises TypeError naming the key."""
        unknown = sorted(set(update or {}) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"RunSpec.model_copy: no field {', '.join(map(repr, unknown))} (give field names)")
        return super().model_copy(update=update, deep=deep)

    @field_validator("run_id")
    @classmethod
    def _valid_run_id(cls, value: str | None) -> str | None:
        return None if value is None else normalize_id(value)

    @field_validator("config")
    @classmethod
    def _valid_config(cls, value: str | None) -> str | None:
        return None if value is None else normalize_id(value, what="config")

    @property
    def config_name(self) -> str:
        """The configuration's name: the one given, else the run's own id (a run alone is its own configuration)."""
        return self.config or self.id

    def fingerprint(self) -> str:
        """Digest of everything that determines the run's result (not its id), stable across releases.

        The canonical form (`fingerprint_form`) always holds the fields of the first release
        (`_FINGERPRINT_V1_FIELDS`, defaults included: a changed default changes results), and a field
        added later only when it differs from its default. So adding an optional field whose default
        keeps the old behaviour leaves every existing fingerprint, run directory and derived run id valid.
        """
        return digest(self.fingerprint_form(), length=16)

    def fingerprint_form(self) -> dict[str, Any]:
        """The canonical JSON form that `fingerprint` digests (see there): the run's id, configuration label,
        extra evaluations and placement fields left out."""
        # Placement (which device runs it) does not change what is computed.
        exclude: dict[str, Any] = {"run_id": True, "config": True, "extra_evals": True, **_PLACEMENT_FIELDS}
        full = self.model_dump(mode="json", exclude=exclude)
        explicit = self.model_dump(mode="json", exclude=exclude, exclude_defaults=True)
        form = _canonical(full, explicit, _FINGERPRINT_V1_FIELDS)
        for section, defaults in _FINGERPRINT_V1_DEFAULTS.items():
            former = _FINGERPRINT_FORMER_DEFAULTS.get(section, {})
            for name, old_default in defaults.items():
                if name not in (explicit.get(section) or {}) or form[section][name] in former.get(name, ()):
                    form[section][name] = old_default
        return form

    def with_canonical_id(self) -> RunSpec:
        """The same spec with a run id: the given one, or one derived from the spec's content."""
        if self.run_id is not None:
            return self
        return self.model_copy(update={"run_id": f"run-{self.fingerprint()[:10]}"})

    @property
    def id(self) -> str:
        """The run id; ValueError if none was given or derived yet (`with_canonical_id`)."""
        if self.run_id is None:
            raise ValueError("run spec has no run_id yet; call with_canonical_id() first")
        return self.run_id


# Train fields a search may set, and whether their values are whole numbers. Not the seed or the row
# selection: every trial trains on the same rows and is measured on the same held-out slice.
SEARCHABLE_FIELDS: dict[str, bool] = {
    "learning_rate": False,
    "weight_decay": False,
    "warmup_ratio": False,
    "epochs": False,
    "batch_size": True,
    "max_seq_length": True,
}
# The metrics each task's evaluation reports (core/evaluation/task_metrics.py: metric_names), and the direction of each.
SEARCH_METRICS: dict[TaskType, tuple[str, ...]] = {
    TaskType.classification: ("accuracy", "f1", "mcc"),
    TaskType.regression: ("pearson", "spearman", "mse"),
}
# The metrics where a smaller value is the better one; larger is better for every other metric. The one
# definition: the search's objective, the statistics and the report all read it.
LOWER_IS_BETTER = frozenset({"mse"})


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is the better one (every metric but those in LOWER_IS_BETTER)."""
    return metric not in LOWER_IS_BETTER


_KINDS = ("loguniform", "uniform", "int", "choice")
# The held-out slice must hold enough rows for an objective to mean something, and leave rows to train on.
SEARCH_MIN_HOLDOUT_ROWS = 20


class Distribution(_Strict):
    """One parameter's values: `{loguniform: [low, high]}`, `{uniform: [low, high]}`, `{int: [low, high]}`
    (inclusive) or `{choice: [v1, v2, ...]}`."""

    kind: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    choices: tuple[float | int, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            if len(value) != 1 or next(iter(value)) not in _KINDS:
                raise ValueError(f"write one of {{{' | '.join(f'{k}: [...]' for k in _KINDS)}}}, got {short(value)}")
            kind, args = next(iter(value.items()))
            if not isinstance(args, list) or not args:
                raise ValueError(f"{kind}: needs a non-empty list, got {short(args)}")
            if kind == "choice":
                return {"kind": kind, "choices": args}
            if len(args) != 2:
                raise ValueError(f"{kind}: needs [low, high], got {short(args)}")
            return {"kind": kind, "low": args[0], "high": args[1]}
        return value

    @model_validator(mode="after")
    def _valid_range(self) -> Distribution:
        if self.kind == "choice":
            if not self.choices:
                raise ValueError("choice: needs at least one value")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"choice: lists a value twice: {short(list(self.choices))}")
            return self
        assert self.low is not None and self.high is not None
        if not self.low < self.high:
            raise ValueError(
                f"{self.kind}: the range [{self.low}, {self.high}] is empty or reversed; "
                "write [low, high] with low < high"
            )
        if self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform: the range must be above 0, got [{self.low}, {self.high}]")
        if self.kind == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"int: the bounds must be whole numbers, got [{self.low}, {self.high}]")
        return self

    def ends(self) -> tuple[float | int, ...]:
        """The extreme values a sample can take (both bounds, or every choice)."""
        if self.choices is not None:
            return self.choices
        assert self.low is not None and self.high is not None
        return (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)


class Objective(_Strict):
    """`objective:` of a search: the metric its trials are ranked by, in which direction, measured on the
    held-out `search` slice (a `holdout` fraction of the training rows)."""

    metric: str = "accuracy"
    mode: Literal["max", "min"] | None = Field(default=None, description="None: min for mse, else max")
    split: Literal["search"] = Field(
        default="search",
        description="the held-out slice of the training split; the final eval split is never searched on",
    )
    holdout: float = Field(
        default=0.1, gt=0, le=0.5, description="fraction of the training rows held out as the search slice"
    )

    @model_validator(mode="before")
    @classmethod
    def _explain_split(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("split", "search") != "search":
            raise ValueError(
                f"split: {short(value['split'])}: a search measures its objective on `search` "
                "(a slice held out from the "
                "training split), so the split the final results report is never tuned on"
            )
        return value

    @model_validator(mode="after")
    def _known_metric(self) -> Objective:
        known = sorted({m for names in SEARCH_METRICS.values() for m in names})
        if self.metric not in known:
            raise ValueError(
                f"metric: {short(self.metric)} is not a metric bert-eval reports; choose one of {', '.join(known)}"
            )
        return self

    @property
    def maximize(self) -> bool:
        """Whether a larger objective is better: `mode` when given, else the metric's own direction."""
        return self.mode == "max" if self.mode is not None else higher_is_better(self.metric)


class Scheduler(_Strict):
    """`scheduler:` of a search: ASHA's rungs (`min_steps` times powers of `reduction_factor`), or `none`
    (every trial trains its full budget)."""

    type: Literal["asha", "none"] = "asha"
    min_steps: int = Field(default=40, ge=1, description="steps of the first rung")
    # η: rung k+1 trains η times the steps of rung k, and the top 1/η of each rung are promoted.
    reduction_factor: int = Field(default=3, ge=2, le=16)


class SearchSpec(_Strict):
    """`search:`: a hyperparameter search over the one run's `train.*` fields: the space, the sampler, how
    many trials (and how many train at once), the objective and the scheduler."""

    space: dict[str, Distribution] = Field(min_length=1, max_length=32)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    trials: int = Field(default=16, ge=1, le=10_000)
    max_concurrent: int = Field(default=4, ge=1, le=256, description="trials training at once")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    objective: Objective = Objective()
    scheduler: Scheduler = Scheduler()

    @model_validator(mode="before")
    @classmethod
    def _scheduler_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("scheduler") in ("none", None) and "scheduler" in value:
            value = {**value, "scheduler": {"type": "none"}}
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _searchable_paths(cls, value: Any) -> Any:
        for path in value if isinstance(value, dict) else ():
            section, _, name = str(path).partition(".")
            if section != "train" or name not in SEARCHABLE_FIELDS:
                raise ValueError(
                    f"{str(path)[:40]}: not a searchable train field; "
                    f"choose from {', '.join(f'train.{n}' for n in SEARCHABLE_FIELDS)}"
                )
        return value

    @model_validator(mode="after")
    def _valid_space(self) -> SearchSpec:
        for path, distribution in self.space.items():
            name = path.removeprefix("train.")
            whole = SEARCHABLE_FIELDS[name]
            if whole and distribution.kind in ("uniform", "loguniform"):
                raise ValueError(f"space.{path}: {name} is a whole number; use int: [low, high] or choice: [...]")
            for end in distribution.ends():
                if whole and not float(end).is_integer():
                    raise ValueError(f"space.{path}: {name} is a whole number, got {end}")
                try:
                    TrainHyperparameters.model_validate({name: int(end) if whole else end})
                except ValueError as exc:
                    reason = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
                    raise ValueError(f"space.{path}: {end} is outside what train.{name} accepts ({reason})") from None
        if self.sampler == "grid":
            if any(d.kind != "choice" for d in self.space.values()):
                raise ValueError("sampler: grid needs every space entry to be a choice: [...]")
            if self.trials > (points := math.prod(len(d.choices or ()) for d in self.space.values())):
                raise ValueError(f"trials: {self.trials} is more than the grid's {points} points")
        return self


_TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "databricks")


class MlflowTracking(_Strict):
    """Where an experiment's results are logged: an MLflow tracking server (or store) and an MLflow experiment."""

    uri: str | None = Field(default=None, max_length=2048, description="None: the MLFLOW_TRACKING_URI setting")
    experiment: str | None = Field(
        default=None, min_length=1, max_length=500, description="None: the bert-eval experiment id"
    )

    @field_validator("uri")
    @classmethod
    def _well_formed(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_tracking_uri_form(value)


def check_tracking_uri_form(value: str) -> str:
    """The URI, trimmed, if it is one MLflow can log to; ValueError naming the URI and what is wrong."""
    from urllib.parse import urlsplit

    uri = value.strip()
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme not in _TRACKING_SCHEMES:
        raise ValueError(
            f"tracking.mlflow.uri {value!r}: not a tracking URI; use http(s)://host:port of an MLflow server "
            f"(or one of the schemes {', '.join(_TRACKING_SCHEMES)})"
        )
    if scheme in ("http", "https") and (not parts.hostname or any(c.isspace() for c in uri)):
        raise ValueError(f"tracking.mlflow.uri {value!r}: an http(s) URI needs a host, e.g. http://mlflow:5000")
    return uri


class TrackingSpec(_Strict):
    """`tracking: {mlflow: {uri, experiment}}`: every run of the experiment logged to MLflow."""

    mlflow: MlflowTracking = MlflowTracking()


class MlflowRegistration(_Strict):
    """The registered model the experiment's winner becomes a version of, and the alias it may move."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
    alias: str = Field(default="champion", min_length=1, max_length=255, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")


class RegisterSpec(_Strict):
    """`register: {mlflow: {name, alias}}`: the winner (search winner, or best configuration's best seed)."""

    mlflow: MlflowRegistration


class Experiment(_Strict):
    """The user's experiment: runs (or one search template), and where results are logged and the winner
    registered. `canonical()` gives every run an id and the experiment its id."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)

    experiment_id: str | None = None
    runs: tuple[RunSpec, ...] = Field(min_length=1, max_length=1000)
    # A search (search.py) over the one run's hyperparameters, which it uses as every trial's template.
    search: SearchSpec | None = None
    # Where its results are logged and its winner registered (MLflow); None: nowhere but the runs volume.
    tracking: TrackingSpec | None = None
    # Written `register:` (the name `register` is taken by pydantic's base class).
    registry: RegisterSpec | None = Field(default=None, validation_alias="register")

    @model_validator(mode="after")
    def _register_has_a_winner(self) -> Experiment:
        if self.registry is None:
            return self
        if self.tracking is None:
            raise ValueError(
                "register: the model registry is MLflow's; add tracking: {mlflow: {uri: ...}} "
                "(or tracking: {mlflow: {}} with MLFLOW_TRACKING_URI set)"
            )
        if self.search is None and all(run.eval_only for run in self.runs):
            raise ValueError(
                "register: no configuration to choose a winner from (every run is train: null); "
                "add runs that train (configurations, seeds) or a search:"
            )
        return self

    @model_validator(mode="after")
    def _one_template(self) -> Experiment:
        if self.search is not None:
            if len(self.runs) != 1:
                raise ValueError(
                    f"search: needs exactly one run, the trials' template (got {len(self.runs)}); drop grid: and seeds:"
                )
            if self.runs[0].eval_only:
                raise ValueError("search: the template run trains (it cannot be train: null)")
            if self.runs[0].holdout is not None:
                raise ValueError(
                    "search: the search holds out its own rows (objective.holdout); drop the template's holdout"
                )
        return self

    @field_validator("experiment_id")
    @classmethod
    def _valid_experiment_id(cls, value: str | None) -> str | None:
        return None if value is None else normalize_id(value, what="experiment_id")

    def canonical(self) -> Experiment:
        """Every run has a run id, ids are unique, and the experiment has an id."""
        runs = tuple(run.with_canonical_id() for run in self.runs)
        if (repeated := duplicate_run_id(run.id for run in runs)) is not None:
            first, again, run_id = repeated
            raise ValueError(f"runs[{first}] and runs[{again}] share run_id {run_id!r}; run ids must be unique")
        if self.search is not None:
            default_id = f"search-{digest([self.search.model_dump(mode='json'), runs[0].fingerprint()], length=10)}"
        else:
            default_id = f"exp-{digest([r.id for r in runs], length=10)}"
        return Experiment(
            experiment_id=self.experiment_id or default_id,
            runs=runs,
            search=self.search,
            tracking=self.tracking,
            registry=self.registry,
        )

    @property
    def id(self) -> str:
        """The experiment id; ValueError if none was given or derived yet (`canonical`)."""
        if self.experiment_id is None:
            raise ValueError("experiment has no id yet; call canonical() first")
        return self.experiment_id
