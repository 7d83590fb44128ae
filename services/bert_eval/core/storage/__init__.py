"""Where a run's artifacts live and how they are written: the runs-volume layout, atomic writes that never
leave a half-written file, the per-run journal, attempt fencing, and the manifest-sealed checkpoint store."""

from typing import TYPE_CHECKING

from bert_eval.core._lazy import lazy_exports

if TYPE_CHECKING:
    from bert_eval.core.storage.checkpoints import Checkpoint, CheckpointStore
    from bert_eval.core.storage.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, publish_dir
    from bert_eval.core.storage.journal import RunJournal
    from bert_eval.core.storage.layout import CellLayout, RunLayout
    from bert_eval.core.storage.rundir import AttemptFence, StaleAttemptError, claim_run_dir

__all__ = [
    "AttemptFence",
    "CellLayout",
    "Checkpoint",
    "CheckpointStore",
    "RunJournal",
    "RunLayout",
    "StaleAttemptError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "claim_run_dir",
    "publish_dir",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AttemptFence": "rundir",
        "CellLayout": "layout",
        "Checkpoint": "checkpoints",
        "CheckpointStore": "checkpoints",
        "RunJournal": "journal",
        "RunLayout": "layout",
        "StaleAttemptError": "rundir",
        "atomic_write_bytes": "fsutil",
        "atomic_write_json": "fsutil",
        "atomic_write_text": "fsutil",
        "claim_run_dir": "rundir",
        "publish_dir": "fsutil",
    },
)
