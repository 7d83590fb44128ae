"""Results where a team already looks: an experiment's runs logged to MLflow (`mlflow_logging`), its winner
registered as an MLflow model version (`registry`), and a run exported as a Hugging Face model folder with a
model card (`export`). Each reads what the runs volume holds; none imports the Temporal layer."""

from bert_eval.tracking.export import ExportError, export_run, push_to_hub
from bert_eval.tracking.mlflow_logging import LoggedExperiment, log_experiment
from bert_eval.tracking.registry import Registration, register_winner
from bert_eval.tracking.server import TrackingUnavailable, check_tracking_server, resolve_tracking_uri

__all__ = [
    "ExportError",
    "LoggedExperiment",
    "Registration",
    "TrackingUnavailable",
    "check_tracking_server",
    "export_run",
    "log_experiment",
    "push_to_hub",
    "register_winner",
    "resolve_tracking_uri",
]
