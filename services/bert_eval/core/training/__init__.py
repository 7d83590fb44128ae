"""Fine-tuning with the Hugging Face Trainer: `fine_tune` reads as a chain of named steps (resolve, load, plan,
build the trainer, train, summarize, publish); checkpoints are written off the training thread and sealed by a
manifest; progress reaches the caller through one observer."""

from typing import TYPE_CHECKING

from bert_eval.core._lazy import lazy_exports

if TYPE_CHECKING:
    from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
    from bert_eval.core.training.observer import ProgressCallback, TrainingObserver

__all__ = [
    "FineTuneRequest",
    "ProgressCallback",
    "TrainingObserver",
    "fine_tune",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FineTuneRequest": "finetuning",
        "ProgressCallback": "observer",
        "TrainingObserver": "observer",
        "fine_tune": "finetuning",
    },
)
