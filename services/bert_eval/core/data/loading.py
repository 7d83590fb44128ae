"""Dataset loading (hub name, local mirror, local directory) and schema inference (run_glue rules)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import datasets
import pandas as pd

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.records import DatasetSchema
from bert_eval.spec import DatasetSpec, TaskType

__all__ = [
    "SUPPORTED_SUFFIXES",
    "check_labels",
    "infer_columns",
    "infer_schema",
    "label_values",
    "load_splits",
    "resolve_dataset_dir",
]

SUPPORTED_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".parquet")
# Split name aliases found in the wild (GLUE ships `dev.tsv`).
_SPLIT_ALIASES = {"validation": ("validation", "dev", "valid", "val"), "test": ("test",), "train": ("train",)}
# Known sentence-pair column names, in run_glue's order of preference.
_PAIR_COLUMNS = (
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
)
_SINGLE_COLUMNS = ("sentence", "text")
_LABEL_COLUMNS = ("label", "labels", "score")
_IGNORED_COLUMNS = {"idx", "id", "index"}
# Label cells that mean "no value" in exported tables; never a class.
_MISSING_LABEL_TEXT = {"", "nan", "na", "n/a", "null", "none", "?"}


def resolve_dataset_dir(spec: DatasetSpec, data_dir: Path | None) -> Path | None:
    """The local directory a spec reads from: its `path`, or the mirror copy of its hub name under
    `data_dir`; None when it is read from the hub. InvalidInputError if `path` does not exist or the name
    holds `.` or `..` components."""
    if spec.path is not None:
        path = Path(spec.path).expanduser()
        if not path.is_dir():
            raise InvalidInputError(f"dataset directory {spec.path!r} does not exist")
        return path
    if data_dir is not None:
        parts = [p for p in (spec.name or "").split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise InvalidInputError(f"dataset name {spec.name!r} may not contain '.' or '..' components")
        mirrored = Path(data_dir).joinpath(*parts)
        if spec.config:
            mirrored = mirrored / spec.config
        if mirrored.is_dir():
            return mirrored
    return None


def load_splits(spec: DatasetSpec, splits: list[str], *, data_dir: Path | None) -> dict[str, datasets.Dataset]:
    """Load the named splits of a dataset as in-memory `datasets.Dataset`s.

    The rows come from the spec's local directory, else from the mirror copy of its hub name under
    `data_dir`, else from the Hugging Face hub. A local directory may hold a `save_to_disk` dataset or one
    table per split (`.tsv`, `.csv`, `.jsonl`, `.json`, `.parquet`; `dev` and `val` stand for `validation`).

    Parameters
    ----------
    spec : DatasetSpec
        Which dataset (hub `name` and `config`, or local `path`).
    splits : list of str
        The split names to load (``["train", "validation"]``).
    data_dir : Path or None
        The local mirror of hub datasets (`BERT_EVAL_DATA_DIR`); None: no mirror.

    Returns
    -------
    dict of str to datasets.Dataset
        One dataset per requested split, keyed by the requested name.

    Raises
    ------
    InvalidInputError
        If the directory, a split or a table is missing or unreadable, or the hub cannot provide the dataset;
        the message names the dataset and what was looked for.
    """
    directory = resolve_dataset_dir(spec, data_dir)
    if directory is not None:
        return {split: _load_local_split(directory, split, spec) for split in splits}
    return _load_from_hub(spec, splits, data_dir)


def _load_local_split(directory: Path, split: str, spec: DatasetSpec) -> datasets.Dataset:
    if (directory / "dataset_dict.json").exists():  # a `save_to_disk` DatasetDict
        loaded = datasets.load_from_disk(str(directory))
        if split not in loaded:
            raise InvalidInputError(f"dataset {spec.label!r} has no split {split!r} (has {sorted(loaded)})")
        return loaded[split]
    for name in _SPLIT_ALIASES.get(split, (split,)):
        if (directory / name / "dataset_info.json").exists():  # a `save_to_disk` Dataset per split
            return datasets.load_from_disk(str(directory / name))
        for suffix in SUPPORTED_SUFFIXES:
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return datasets.Dataset.from_pandas(_read_table(candidate), preserve_index=False)
    found = sorted(p.name for p in directory.iterdir() if p.suffix in SUPPORTED_SUFFIXES)
    raise InvalidInputError(
        f"dataset {spec.label!r}: no {split!r} split in {directory} "
        f"(looked for {'/'.join(_SPLIT_ALIASES.get(split, (split,)))} with {', '.join(SUPPORTED_SUFFIXES)}; "
        f"found {found})"
    )


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".tsv":
            # GLUE TSVs are unquoted: a stray '"' in a sentence is text, not a quote.
            return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
        if path.suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False)
        if path.suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        if path.suffix == ".json":
            try:
                return pd.read_json(path)
            except ValueError:
                return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from exc


def _load_from_hub(spec: DatasetSpec, splits: list[str], data_dir: Path | None) -> dict[str, datasets.Dataset]:
    name, config = spec.name or "", spec.config
    if config is None and name.count("/") == 1 and name.split("/")[0] == "glue":
        name, config = "nyu-mll/glue", name.split("/")[1]  # `glue/sst2` is the GLUE config `sst2`
    try:
        return {split: datasets.load_dataset(name, config, split=split) for split in splits}
    except Exception as exc:  # the hub raises many types: connection, not found, bad config
        mirror = f" and not in the local mirror {data_dir}" if data_dir else " (no local mirror BERT_EVAL_DATA_DIR set)"
        raise InvalidInputError(
            f"dataset {spec.label!r} could not be loaded from the hub{mirror}: {type(exc).__name__}: {exc}"
        ) from exc


def infer_schema(train: datasets.Dataset, spec: DatasetSpec) -> DatasetSchema:
    """The schema of a dataset's training rows: text column(s), label column, task and label set.

    Follows transformers' run_glue rules unless the spec names them: `sentence1`/`sentence2` (and the other
    known pairs) make a pair task, `sentence`/`text` a single one; a float label column means regression;
    class labels are the sorted distinct values (numbers in numeric order), or a ClassLabel's names.

    Parameters
    ----------
    train : datasets.Dataset
        The training split, as `load_splits` returns it.
    spec : DatasetSpec
        The dataset spec; its `text_columns`, `label_column` and `task` override inference.

    Returns
    -------
    DatasetSchema
        The columns, the task and, for classification, the label names in class-id order.

    Raises
    ------
    InvalidInputError
        If the split is empty, a named or needed column is missing, a label is missing or of mixed kinds,
        or a classification has fewer than two classes; the message says which field to set.
    """
    text_columns, label_column, task = infer_columns(train, spec, split=spec.train_split)
    if task is TaskType.regression:
        return DatasetSchema(text_columns=text_columns, label_column=label_column, task=task)
    label_names = label_values(train, label_column)
    if len(label_names) < 2:
        raise InvalidInputError(
            f"dataset {spec.label!r}: label column {label_column!r} has a single value {label_names}; "
            "classification needs at least two classes"
        )
    return DatasetSchema(text_columns=text_columns, label_column=label_column, task=task, label_names=label_names)


def infer_columns(rows: datasets.Dataset, spec: DatasetSpec, *, split: str) -> tuple[tuple[str, ...], str, TaskType]:
    """(text column(s), label column, task) of the `split` rows, given in the spec or inferred (run_glue
    rules); every label is checked (present, one kind)."""
    columns = list(rows.column_names)
    if len(rows) == 0:
        raise InvalidInputError(f"dataset {spec.label!r}: the {split!r} split is empty")

    label_column = spec.label_column or next((c for c in _LABEL_COLUMNS if c in columns), None)
    if label_column is None or label_column not in columns:
        looked = f"given {spec.label_column!r}" if spec.label_column else f"looked for {'/'.join(_LABEL_COLUMNS)}"
        raise InvalidInputError(
            f"dataset {spec.label!r}: no label column in split {split!r} ({looked}; "
            f"columns are {columns}); set dataset.label_column"
        )

    if spec.text_columns:
        missing = [c for c in spec.text_columns if c not in columns]
        if missing:
            raise InvalidInputError(
                f"dataset {spec.label!r}: text column(s) {missing} not in split {split!r} ({columns}); "
                "check dataset.text_columns"
            )
        text_columns = tuple(spec.text_columns)
    else:
        text_columns = _infer_text_columns(rows, columns, label_column, spec)

    # One Arrow column to a list (honours a selection's indices); `rows[column]` would go through
    # datasets' per-row formatting, most of a snapshot's time (docs/performance.md).
    labels = rows.with_format("arrow")[label_column].to_pylist()
    is_float = rows.features[label_column].dtype in ("float32", "float64", "float16")
    task = spec.task or (TaskType.regression if is_float else TaskType.classification)
    check_labels(labels, task, f"dataset {spec.label!r}: split {split!r}, label column {label_column!r}")
    return text_columns, label_column, task


def label_values(rows: datasets.Dataset, label_column: str) -> tuple[str, ...]:
    """The distinct class labels of `rows` as names: a ClassLabel's names in class-id order, else the
    values as text, numbers in numeric order (so 2 < 10)."""
    labels = rows.with_format("arrow")[label_column].to_pylist()
    feature = rows.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        # The dataset's own class names (hub GLUE: negative/positive), in class-id order.
        return tuple(feature.int2str(v) for v in sorted(set(labels)) if 0 <= v < feature.num_classes)
    return tuple(str(v) for v in sorted(set(labels), key=_label_sort_key))


def check_labels(values: Sequence[object], task: TaskType, where: str) -> None:
    """InvalidInputError unless every label is present and of one kind: a missing, NaN or empty label,
    or a column mixing numbers and words, would otherwise become an extra class and change the metrics."""
    missing = [i for i, value in enumerate(values) if _is_missing(value)]
    if missing:
        rows = ", ".join(str(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InvalidInputError(
            f"{where}: {len(missing)} row(s) have a missing, NaN or empty label (row indices {rows}); "
            "fix or drop those rows"
        )
    kinds = {_label_kind(value) for value in values}
    if task is TaskType.regression and kinds != {"number"}:
        words = sorted({str(v) for v in values if _label_kind(v) != "number"})[:5]
        raise InvalidInputError(f"{where}: regression labels must all be numbers; found {words}")
    if len(kinds) > 1:
        examples = {kind: next(str(v) for v in values if _label_kind(v) == kind) for kind in sorted(kinds)}
        raise InvalidInputError(
            f"{where}: labels mix kinds ({', '.join(f'{k} e.g. {v!r}' for k, v in examples.items())}); "
            "use one consistent set of label values"
        )


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_LABEL_TEXT


def _label_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "word"
        return "number"
    return type(value).__name__


def _label_sort_key(value: object) -> tuple[int, object]:
    # Numbers sort numerically (so 2 < 10), then strings.
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def _infer_text_columns(
    train: datasets.Dataset, columns: list[str], label_column: str, spec: DatasetSpec
) -> tuple[str, ...]:
    for pair in _PAIR_COLUMNS:
        if all(c in columns for c in pair):
            return pair
    for single in _SINGLE_COLUMNS:
        if single in columns:
            return (single,)
    candidates = [
        c
        for c in columns
        if c != label_column and c not in _IGNORED_COLUMNS and train.features[c].dtype in ("string", "large_string")
    ]
    if not candidates:
        raise InvalidInputError(f"dataset {spec.label!r}: no text column found in {columns}; set dataset.text_columns")
    return tuple(candidates[:2])
