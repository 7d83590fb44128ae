"""bert-eval: durable BERT fine-tuning + evaluation experiments on Temporal.

The Python API (docs/python-api.md)::

    import bert_eval

    client = bert_eval.Client()  # TEMPORAL_ADDRESS, or Client("host:7233", namespace=...)
    handle = client.submit("experiment.yaml")
    handle.wait(progress=True)
    handle.configs_df()

Its names are imported on first use, so `import bert_eval` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bert_eval.client import (
        AsyncClient,
        AsyncExperimentHandle,
        Client,
        ClientConnectionError,
        Comparison,
        ExperimentFailedError,
        ExperimentHandle,
        ExperimentStatus,
        PredictionError,
        ProgressBar,
        compare,
    )
    from bert_eval.core.records import (
        ConfigStats,
        EvalResult,
        ExperimentSummary,
        PredictResult,
        RunInterval,
        TrainingSummary,
    )
    from bert_eval.experiment import ExperimentFileError
    from bert_eval.spec import Experiment, RunSpec
    from bert_eval.temporal.client import MissingSearchAttributesError
    from bert_eval.temporal.payloads import ExperimentResult, RunResult, RunStatus, SearchOutcome, SearchTrial
    from bert_eval.temporal.submit import SubmissionError

# Public name -> the module that defines it.
_EXPORTS = {
    "AsyncClient": "bert_eval.client",
    "AsyncExperimentHandle": "bert_eval.client",
    "Client": "bert_eval.client",
    "ClientConnectionError": "bert_eval.client",
    "Comparison": "bert_eval.client",
    "ExperimentFailedError": "bert_eval.client",
    "ExperimentHandle": "bert_eval.client",
    "ExperimentStatus": "bert_eval.client",
    "PredictionError": "bert_eval.client",
    "ProgressBar": "bert_eval.client",
    "compare": "bert_eval.client",
    "ConfigStats": "bert_eval.core.records",
    "EvalResult": "bert_eval.core.records",
    "ExperimentSummary": "bert_eval.core.records",
    "PredictResult": "bert_eval.core.records",
    "RunInterval": "bert_eval.core.records",
    "TrainingSummary": "bert_eval.core.records",
    "ExperimentFileError": "bert_eval.experiment",
    "Experiment": "bert_eval.spec",
    "RunSpec": "bert_eval.spec",
    "MissingSearchAttributesError": "bert_eval.temporal.client",
    "ExperimentResult": "bert_eval.temporal.payloads",
    "RunResult": "bert_eval.temporal.payloads",
    "RunStatus": "bert_eval.temporal.payloads",
    "SearchOutcome": "bert_eval.temporal.payloads",
    "SearchTrial": "bert_eval.temporal.payloads",
    "SubmissionError": "bert_eval.temporal.submit",
}

__all__ = [
    "__version__",
    "AsyncClient",
    "AsyncExperimentHandle",
    "Client",
    "ClientConnectionError",
    "Comparison",
    "ConfigStats",
    "EvalResult",
    "Experiment",
    "ExperimentFailedError",
    "ExperimentFileError",
    "ExperimentHandle",
    "ExperimentResult",
    "ExperimentStatus",
    "ExperimentSummary",
    "MissingSearchAttributesError",
    "PredictResult",
    "PredictionError",
    "ProgressBar",
    "RunInterval",
    "RunResult",
    "RunSpec",
    "RunStatus",
    "SearchOutcome",
    "SearchTrial",
    "SubmissionError",
    "TrainingSummary",
    "compare",
]


def _export(name: str) -> Any:
    return getattr(importlib.import_module(_EXPORTS[name]), name)


class _Package(types.ModuleType):
    """`bert_eval` itself: the public names load on first use, and `bert_eval.compare` stays the function
    even once the `bert_eval.compare` module is imported (the import system then sets the package's
    `compare` attribute to the module; the module stays reachable as `sys.modules["bert_eval.compare"]`)."""

    @property
    def compare(self) -> Any:
        return _export("compare")

    @compare.setter
    def compare(self, module: types.ModuleType) -> None:
        pass  # the submodule, set by the import system: `from bert_eval.compare import ...` finds it in sys.modules

    def __getattr__(self, name: str) -> Any:
        if name not in _EXPORTS:
            raise AttributeError(f"module 'bert_eval' has no attribute {name!r}")
        value = _export(name)
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *_EXPORTS})


sys.modules[__name__].__class__ = _Package
