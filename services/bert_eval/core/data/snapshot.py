"""Content-addressed dataset snapshots: the exact rows a run trains and evaluates on.

`<runs_dir>/snapshots/<id>/{train.parquet, <eval table>.parquet, manifest.json}` where `id` hashes the
selection spec and the selected rows. Snapshots are written under a temporary name and renamed into
place, reused when they exist, and verified (file digests) every time they are opened and every time
rows are read from them: the bytes training and evaluation use are the bytes that were hashed.

The training table is always `train`; the evaluation table is named after its split, except that an
evaluation on the `train` split is stored apart as `train@eval` (the whole train split, read on its own),
so it can never replace the rows the run trains on.

An eval-only snapshot (`train_table=False`, `SnapshotInput.for_model`) holds just the evaluation table, for
evaluating a model as given: its columns and task come from the evaluation split itself, and its label
names are the model's, so label ids index the model's classes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, model_validator

from bert_eval.core.data.loading import check_labels, infer_columns, infer_schema, label_values, load_splits
from bert_eval.core.errors import InvalidInputError, naming_run
from bert_eval.core.records import DatasetSchema, ModelInfo, SnapshotResult
from bert_eval.core.storage.fsutil import atomic_write_json, discard_dir, publish_dir
from bert_eval.core.storage.layout import snapshots_dir
from bert_eval.search import holdout_rows
from bert_eval.spec import SEARCH_MIN_HOLDOUT_ROWS, DatasetSpec, Holdout, RunSpec, TaskType

__all__ = [
    "LABEL",
    "MANIFEST",
    "SEARCH_TABLE",
    "TEXT",
    "TEXT_PAIR",
    "SnapshotInput",
    "create_snapshot",
    "eval_table",
    "open_snapshot",
    "read_split",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Normalized column names inside a snapshot; the manifest's schema records the original ones.
TEXT, TEXT_PAIR, LABEL = "text", "text_pair", "label"
TRAIN_TABLE = "train"
# A search's held-out slice of the training rows (RunSpec.holdout): trials are compared on it.
SEARCH_TABLE = "search"


class SnapshotInput(BaseModel):
    """The rows a run trains and evaluates on: the dataset and the selection from it.

    Build it with `for_run` (a run that trains) or `for_model` (an eval-only snapshot of a model as given).
    Raises pydantic's ValidationError when the model fields (`task`, `label_names`) and `train_table`
    disagree.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    dataset: DatasetSpec
    max_train_samples: int | None = None
    eval_split: str = "validation"
    max_eval_samples: int | None = None
    seed: int = 42
    shuffle_before_select: bool = True
    # Training rows held out as the `search` table (RunSpec.holdout), after max_train_samples selects them.
    holdout: Holdout | None = None
    # False: an eval-only snapshot (no training table) for a model as given, whose task and (classification)
    # class names, in class-id order, are `task` and `label_names`.
    train_table: bool = True
    task: TaskType | None = None
    label_names: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _model_labels_only_for_eval_only(self) -> SnapshotInput:
        run = f"run {self.run_id}"
        if self.train_table:
            if self.task is not None or self.label_names is not None:
                raise ValueError(
                    f"{run}: task and label_names describe the model of an eval-only snapshot; set train_table false"
                )
            return self
        if self.task is None:
            raise ValueError(f"{run}: an eval-only snapshot needs the model's task")
        if self.task is TaskType.classification and not self.label_names:
            raise ValueError(f"{run}: an eval-only snapshot of a classifier needs the model's label_names")
        if self.task is TaskType.regression and self.label_names:
            raise ValueError(f"{run}: a regression model has no label_names")
        if self.max_train_samples is not None:
            raise ValueError(f"{run}: max_train_samples selects training rows; an eval-only snapshot has none")
        return self

    @classmethod
    def for_model(
        cls,
        *,
        run_id: str,
        dataset: DatasetSpec,
        model: ModelInfo,
        eval_split: str = "validation",
        max_eval_samples: int | None = None,
    ) -> SnapshotInput:
        """The rows an evaluation of `model` (as given, no training) reads: one split, labelled with the
        model's classes."""
        return cls(
            run_id=run_id,
            dataset=dataset,
            eval_split=eval_split,
            max_eval_samples=max_eval_samples,
            train_table=False,
            task=model.task,
            label_names=model.label_names if model.task is TaskType.classification else None,
        )

    @classmethod
    def for_run(cls, run: RunSpec) -> SnapshotInput:
        """The rows a run trains and evaluates on."""
        return cls(
            run_id=run.id,
            dataset=run.dataset,
            max_train_samples=run.train.max_train_samples,
            eval_split=run.primary_eval.split,
            max_eval_samples=run.primary_eval.max_eval_samples,
            seed=run.train.seed,
            shuffle_before_select=run.train.shuffle_before_select,
            holdout=run.holdout,
        )


def eval_table(split: str) -> str:
    """The snapshot table an evaluation on `split` reads ('@' cannot occur in a split name)."""
    return f"{split}@eval" if split == TRAIN_TABLE else split


def create_snapshot(request: SnapshotInput, *, runs_dir: Path, data_dir: Path | None) -> SnapshotResult:
    """Select the run's rows, and write (or reuse) the content-addressed snapshot holding exactly them.

    Parameters
    ----------
    request : SnapshotInput
        The dataset and the selection (`SnapshotInput.for_run` or `SnapshotInput.for_model`).
    runs_dir : Path
        The runs volume; the snapshot lands in `<runs_dir>/snapshots/<snapshot_id>/`.
    data_dir : Path or None
        The local mirror of hub datasets (see `load_splits`).

    Returns
    -------
    SnapshotResult
        The snapshot's id (a digest of the selection and the rows), path, schema and row count per table;
        `reused` is True when a verified snapshot with the same id already existed.

    Raises
    ------
    InvalidInputError
        If the data cannot be loaded, its schema or labels are unusable, a split is empty, or the held-out
        slice is too small; the message names the run and the field to change.
    OSError
        If the runs volume cannot be written (nothing half-written is left behind).
    """
    if request.train_table:
        schema, tables, selection = _training_rows(request, data_dir)
    else:
        schema, tables, selection = _eval_only_rows(request, data_dir)
    snapshot_id = _content_id(selection, tables)
    root = snapshots_dir(runs_dir)
    target = root / snapshot_id
    splits = {name: len(table) for name, table in tables.items()}

    if target.exists():
        try:
            existing = open_snapshot(target)
            return existing.model_copy(update={"reused": True})
        except InvalidInputError as exc:
            # Keep the damaged copy for inspection; never delete data.
            aside = root / f".corrupt-{snapshot_id}-{int(time.time())}"
            log.warning("snapshot %s failed verification (%s); moving it to %s and rebuilding", snapshot_id, exc, aside)
            os.replace(target, aside)

    staging = root / f".tmp-{snapshot_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        files = {}
        for name, table in tables.items():
            file = staging / f"{name}.parquet"
            table.to_parquet(str(file))
            files[file.name] = _sha256(file)
        manifest = {
            "snapshot_id": snapshot_id,
            "selection": selection,
            "schema": schema.model_dump(mode="json"),
            "splits": splits,
            "files": files,
            "created_at": time.time(),
        }
        atomic_write_json(staging / MANIFEST, manifest)
    except BaseException:
        discard_dir(staging)  # a full volume leaves no half-written snapshot behind
        raise
    if not publish_dir(staging, target):
        # Another worker published the same content first: theirs is as good as ours.
        log.info("snapshot %s was published concurrently; using the existing copy", snapshot_id)
        return open_snapshot(target).model_copy(update={"reused": True})
    return SnapshotResult(snapshot_id=snapshot_id, path=str(target), dataset_schema=schema, splits=splits)


def _training_rows(
    request: SnapshotInput, data_dir: Path | None
) -> tuple[DatasetSchema, dict[str, Any], dict[str, Any]]:
    """(schema, normalized tables, selection) of a run that trains: schema from the training split."""
    spec = request.dataset
    try:
        raw = load_splits(spec, [spec.train_split], data_dir=data_dir)
        # Read on its own even when it names the training split: the eval table never aliases training's.
        evaluation = _load_eval_split(request, data_dir)
        schema = infer_schema(raw[spec.train_split], spec)
    except InvalidInputError as exc:
        raise _for_run(exc, request.run_id) from exc.__cause__
    log.info("run %s: %s task, classes %s", request.run_id, schema.task.value, list(schema.label_names) or "-")

    train = raw[spec.train_split]
    if request.max_train_samples is not None and request.max_train_samples < len(train):
        if request.shuffle_before_select:
            train = train.shuffle(seed=request.seed)
        train = train.select(range(request.max_train_samples))
    if request.max_eval_samples is not None and request.max_eval_samples < len(evaluation):
        evaluation = evaluation.select(range(request.max_eval_samples))
    if len(evaluation) == 0:
        raise InvalidInputError(f"run {request.run_id}: evaluation split {request.eval_split!r} is empty")

    tables = {}
    if request.holdout is not None:
        train, held_out = _carve(train, request)
        tables[SEARCH_TABLE] = _normalize(held_out, schema, f"run {request.run_id}: split {spec.train_split!r}")
    tables[TRAIN_TABLE] = _normalize(train, schema, f"run {request.run_id}: split {spec.train_split!r}")
    tables[eval_table(request.eval_split)] = _normalize(
        evaluation, schema, f"run {request.run_id}: split {request.eval_split!r}"
    )
    selection = {
        "dataset": spec.model_dump(mode="json"),
        "max_train_samples": request.max_train_samples,
        "eval_split": request.eval_split,
        "max_eval_samples": request.max_eval_samples,
        "seed": request.seed,
        "schema": schema.model_dump(mode="json"),
    }
    # Only when set: snapshot ids of shuffled selections stay as they were.
    if not request.shuffle_before_select:
        selection["shuffle_before_select"] = False
    if request.holdout is not None:
        selection["holdout"] = request.holdout.model_dump(mode="json")
    return schema, tables, selection


def _carve(train: datasets.Dataset, request: SnapshotInput) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training rows, held-out rows): a seeded random `holdout.fraction` of the selected rows, each part in
    its original order."""
    holdout = request.holdout
    assert holdout is not None
    if request.eval_split == SEARCH_TABLE:
        raise InvalidInputError(
            f"run {request.run_id}: the eval split cannot be named {SEARCH_TABLE!r} when rows are held out under "
            "that name"
        )
    rows = len(train)
    held = holdout_rows(rows, holdout.fraction)
    if held < SEARCH_MIN_HOLDOUT_ROWS or rows - held < SEARCH_MIN_HOLDOUT_ROWS:
        raise InvalidInputError(
            f"run {request.run_id}: split {request.dataset.train_split!r} has {rows} selected rows: too few to hold "
            f"out a search slice of {SEARCH_MIN_HOLDOUT_ROWS}+ rows (fraction {holdout.fraction} gives {held}) "
            f"and train on {SEARCH_MIN_HOLDOUT_ROWS}+; raise train.max_train_samples or search.objective.holdout"
        )
    chosen = set(random.Random(holdout.seed).sample(range(rows), held))
    return train.select([i for i in range(rows) if i not in chosen]), train.select(sorted(chosen))


def _eval_only_rows(
    request: SnapshotInput, data_dir: Path | None
) -> tuple[DatasetSchema, dict[str, Any], dict[str, Any]]:
    """(schema, normalized tables, selection) of an eval-only snapshot: the evaluation split alone."""
    spec = request.dataset
    evaluation = _load_eval_split(request, data_dir)
    if request.max_eval_samples is not None and request.max_eval_samples < len(evaluation):
        evaluation = evaluation.select(range(request.max_eval_samples))
    if len(evaluation) == 0:
        raise InvalidInputError(f"run {request.run_id}: evaluation split {request.eval_split!r} is empty")
    try:
        schema = _model_schema(evaluation, request)
    except InvalidInputError as exc:
        raise _for_run(exc, request.run_id) from exc.__cause__
    log.info(
        "run %s: eval-only snapshot, %s model, classes %s",
        request.run_id,
        schema.task.value,
        list(schema.label_names) or "-",
    )
    where = f"run {request.run_id}: split {request.eval_split!r}"
    tables = {eval_table(request.eval_split): _normalize(evaluation, schema, where)}
    selection = {
        "dataset": spec.model_dump(mode="json"),
        "eval_split": request.eval_split,
        "max_eval_samples": request.max_eval_samples,
        "schema": schema.model_dump(mode="json"),  # the model's task and class names
        "train_table": False,
    }
    return schema, tables, selection


def _model_schema(evaluation: datasets.Dataset, request: SnapshotInput) -> DatasetSchema:
    """The evaluation split's columns with the model's task and classes; InvalidInputError when the data's
    task differs from the model's or the data holds labels the model does not predict."""
    spec, split, run = request.dataset, request.eval_split, f"run {request.run_id}"
    model_task = request.task
    assert model_task is not None  # SnapshotInput's validator: eval-only snapshots carry the model's task
    text_columns, label_column, data_task = infer_columns(evaluation, spec, split=split)
    if data_task is not model_task:
        hint = (
            ""
            if spec.task is not None
            else f" (inferred from the label values; set dataset.task if they mean {model_task.value})"
        )
        raise InvalidInputError(
            f"{run}: the model is a {model_task.value} model but split {split!r} of dataset {spec.label!r} holds "
            f"{data_task.value} labels{hint}; evaluate it on {model_task.value} data"
        )
    if model_task is TaskType.regression:
        return DatasetSchema(text_columns=text_columns, label_column=label_column, task=model_task)
    model_labels = tuple(request.label_names or ())
    data_labels = label_values(evaluation, label_column)
    unknown = [label for label in data_labels if label not in model_labels]
    if unknown:
        raise InvalidInputError(
            f"{run}: split {split!r} of dataset {spec.label!r} has label(s) {unknown[:10]} that the model does not "
            f"predict: the data's labels are {list(data_labels)[:20]}, the model's {list(model_labels)} (its "
            "config.id2label). Evaluate a model trained on these labels, or a dataset labelled with the model's "
            "names"
        )
    return DatasetSchema(
        text_columns=text_columns, label_column=label_column, task=model_task, label_names=model_labels
    )


def _load_eval_split(request: SnapshotInput, data_dir: Path | None) -> datasets.Dataset:
    """The evaluation split, read on its own; a split the dataset lacks fails at once, on one line."""
    try:
        return load_splits(request.dataset, [request.eval_split], data_dir=data_dir)[request.eval_split]
    except InvalidInputError as exc:
        message = " ".join(str(exc).split())
        named = naming_run(request.run_id, f"evaluation split {request.eval_split!r}: {message}")
        raise InvalidInputError(named) from exc.__cause__


def open_snapshot(path: str | Path) -> SnapshotResult:
    """Open and verify the snapshot at `path`: every file its manifest lists must be there with its digest.

    Raises InvalidInputError naming the snapshot and the missing or changed file."""
    path = Path(path)
    manifest_file = path / MANIFEST
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"snapshot {path} has no readable manifest: {exc}") from exc
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise InvalidInputError(f"snapshot {path}: file {name} is missing")
        if _sha256(file) != digest:
            raise InvalidInputError(f"snapshot {path}: file {name} does not match its recorded digest")
    return SnapshotResult(
        snapshot_id=manifest["snapshot_id"],
        path=str(path),
        dataset_schema=DatasetSchema.model_validate(manifest["schema"]),
        splits=manifest["splits"],
    )


def read_split(snapshot: SnapshotResult, table: str, *, run_id: str | None = None) -> datasets.Dataset:
    """The rows of one snapshot table, verified against the manifest's digest (the very bytes parsed).

    Raises InvalidInputError (naming `run_id` when given) if the table is missing, unlisted, or changed
    since the snapshot was taken."""
    owner = f"run {run_id}: " if run_id else ""
    root = Path(snapshot.path)
    file = root / f"{table}.parquet"
    if not file.is_file():
        raise InvalidInputError(
            f"{owner}snapshot {snapshot.snapshot_id} has no table {table!r} (has {sorted(snapshot.splits)})"
        )
    try:
        recorded = json.loads((root / MANIFEST).read_text())["files"][file.name]
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInputError(
            f"{owner}snapshot {root} has no readable manifest entry for {file.name}: {exc}"
        ) from exc
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != recorded:
        raise InvalidInputError(
            f"{owner}snapshot {snapshot.snapshot_id}: {file.name} changed after the snapshot was taken (its digest no "
            f"longer matches the manifest), so these are not the rows the run was defined on. Delete {root} and "
            "resubmit to rebuild the snapshot from the source data."
        )
    return datasets.Dataset(pq.read_table(io.BytesIO(data)))


def _for_run(exc: InvalidInputError, run_id: str) -> InvalidInputError:
    message = naming_run(run_id, str(exc))
    return exc if message == str(exc) else InvalidInputError(message)


def _normalize(split: datasets.Dataset, schema: DatasetSchema, where: str) -> Any:
    """A pandas frame with the normalized columns; labels as class ids (classification) or floats."""
    missing = [c for c in (*schema.text_columns, schema.label_column) if c not in split.column_names]
    if missing:
        fields = sorted(
            {"dataset.label_column" if c == schema.label_column else "dataset.text_columns" for c in missing}
        )
        raise InvalidInputError(
            f"{where} lacks column(s) {missing} (has {split.column_names}); check {' and '.join(fields)}"
        )
    frame = split.select_columns([*schema.text_columns, schema.label_column]).to_pandas()
    out = frame[[schema.text_columns[0]]].rename(columns={schema.text_columns[0]: TEXT}).astype(str)
    if len(schema.text_columns) == 2:
        out[TEXT_PAIR] = frame[schema.text_columns[1]].astype(str)
    labels = frame[schema.label_column]
    check_labels(labels.tolist(), schema.task, where)
    if schema.task is TaskType.regression:
        try:
            out[LABEL] = labels.astype("float32")
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{where}: regression labels must be numbers ({exc})") from exc
        return out
    index = {name: i for i, name in enumerate(schema.label_names)}
    feature = split.features[schema.label_column]
    if isinstance(feature, datasets.ClassLabel):  # class ids -> the names the schema holds
        as_text = labels.map(lambda v: feature.int2str(v) if 0 <= v < feature.num_classes else str(v))
    else:
        as_text = labels.map(str)
    unknown = sorted(set(as_text) - set(index))
    if unknown:
        raise InvalidInputError(
            f"{where} has label(s) {unknown[:5]} not seen in the training split {list(schema.label_names)}"
        )
    out[LABEL] = as_text.map(index).astype("int64")
    return out


def _content_id(selection: dict[str, Any], tables: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode())
    for name in sorted(tables):
        digest.update(f"\0split:{name}\0".encode())
        digest.update(tables[name].to_json(orient="records", lines=True).encode())
    return digest.hexdigest()[:16]


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
