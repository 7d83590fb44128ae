"""A run's data: loading (hub, local mirror or directory) with run_glue's schema inference, content-addressed
snapshots of the rows a run trains and evaluates on, tokenization cached per snapshot, and batching."""

from typing import TYPE_CHECKING

from bert_eval.core._lazy import lazy_exports

if TYPE_CHECKING:
    from bert_eval.core.data.loading import infer_schema, load_splits
    from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot, open_snapshot, read_split
    from bert_eval.core.data.tokenize import tokenized_split

__all__ = [
    "SnapshotInput",
    "create_snapshot",
    "infer_schema",
    "load_splits",
    "open_snapshot",
    "read_split",
    "tokenized_split",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SnapshotInput": "snapshot",
        "create_snapshot": "snapshot",
        "infer_schema": "loading",
        "load_splits": "loading",
        "open_snapshot": "snapshot",
        "read_split": "snapshot",
        "tokenized_split": "tokenize",
    },
)
