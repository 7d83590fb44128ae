"""bert-eval's Python client (`bert_eval.Client`, `bert_eval.AsyncClient`): the experiments the CLI
runs, from scripts and notebooks, with their records as pandas DataFrames."""

from bert_eval.client.aio import AsyncClient, AsyncExperimentHandle, ExperimentSource, ExperimentStatus
from bert_eval.client.comparison import Comparison, compare
from bert_eval.client.errors import ClientConnectionError, ExperimentFailedError, PredictionError
from bert_eval.client.progress import ProgressBar
from bert_eval.client.sync import Client, ExperimentHandle

__all__ = [
    "AsyncClient",
    "AsyncExperimentHandle",
    "Client",
    "ClientConnectionError",
    "Comparison",
    "ExperimentFailedError",
    "ExperimentHandle",
    "ExperimentSource",
    "ExperimentStatus",
    "PredictionError",
    "ProgressBar",
    "compare",
]
