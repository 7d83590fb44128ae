"""The one settings object, read from the environment (and nothing else reads os.environ)."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TRAINING_TASK_QUEUE = "bert-training-task-queue"
EVAL_TASK_QUEUE = "bert-eval-task-queue"
# A task-queue prefix is a DNS-label-like name (it also names Kubernetes objects and Prometheus label values).
_TASK_QUEUE_PREFIX = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")


class TemporalSettings(BaseSettings):
    """How to reach Temporal (`TEMPORAL_*`)."""

    model_config = SettingsConfigDict(env_prefix="TEMPORAL_", extra="ignore")

    address: str = "localhost:7233"
    namespace: str = "default"
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    api_key: SecretStr | None = None
    # TLS server name (SNI and certificate verification) when it differs from the address's host.
    tls_server_name: str | None = None


class Settings(BaseSettings):
    """Process-wide settings (`BERT_EVAL_*`)."""

    model_config = SettingsConfigDict(env_prefix="BERT_EVAL_", extra="ignore")

    runs_dir: Path = Path("./bert_runs")
    # Local mirror of hub datasets: `glue/sst2` is read from `<data_dir>/glue/sst2/` when present.
    data_dir: Path | None = None
    # A read-only mirror of model directories: an evaluation's model `org/name` is read from `<models_dir>/org/name/`,
    # and a reference-design model_path may name a directory inside it (or inside runs_dir, nowhere else).
    models_dir: Path | None = None
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    # One fine-tune per training worker process: the HF Trainer keeps process-wide Accelerate state
    # (AcceleratorState, GradientState) that a second Trainer in the same process resets under the
    # first (seen: `AcceleratorState object has no attribute distributed_type`). Scale with replicas.
    training_concurrency: int = Field(default=1, ge=1)
    eval_concurrency: int = Field(default=4, ge=1, le=256)
    # Heartbeat timeout of the fine-tune activity: how fast a dead worker is noticed.
    heartbeat_timeout_s: float = Field(default=30.0, gt=0)
    # A search continues as new (its trials in flight ended first) past this many events of history.
    search_history_limit: int = Field(default=8_000, ge=200, le=40_000)
    # Force CPU even when a GPU is present (tests, debugging).
    force_cpu: bool = False
    # After SIGTERM, how long the worker waits for its activities (a training attempt stops at the next
    # step and writes a final checkpoint) before cancelling them. Unset: 90 s training, 30 s eval. The
    # chart sets it to the pod's terminationGracePeriodSeconds minus a margin, so it ends before SIGKILL.
    graceful_shutdown_s: float | None = Field(default=None, ge=0)
    # A training worker that finds no CUDA device exits at start instead of training on CPU
    # (the chart sets it with gpu.enabled).
    require_gpu: bool = False
    # Never contact the Hugging Face hub: models and datasets come from local paths and the mirror.
    offline: bool = False
    # Prefix of both task queues (`<prefix>-bert-training-task-queue`), so releases sharing one Temporal
    # namespace do not take each other's tasks. Empty: the plain queue names.
    task_queue_prefix: str = ""
    # MLflow's own variable: the tracking server an experiment with `tracking: {mlflow: {}}` (or without
    # `tracking:`, when set on the submitting side) logs to.
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri")
    )

    @field_validator("task_queue_prefix")
    @classmethod
    def _dns_label_prefix(cls, value: str) -> str:
        if value and not _TASK_QUEUE_PREFIX.fullmatch(value):
            raise ValueError(
                f"task-queue prefix {value!r} must be 1-40 lowercase letters, digits or '-', starting and ending "
                "with a letter or digit (e.g. `team-a`); leave it empty for the plain queue names"
            )
        return value

    @field_validator("training_concurrency")
    @classmethod
    def _one_fine_tune_per_process(cls, value: int) -> int:
        if value != 1:
            raise ValueError(
                f"a training worker runs one fine-tune at a time, not {value}: the Hugging Face Trainer keeps "
                "process-wide Accelerate state that concurrent Trainers in one process reset under each other. "
                "Run more training worker processes (chart: training.replicas) instead"
            )
        return value


def task_queues(settings: Settings) -> tuple[str, str]:
    """(training queue, eval queue) of this deployment: the plain names, or both behind the prefix."""
    prefix = f"{settings.task_queue_prefix}-" if settings.task_queue_prefix else ""
    return prefix + TRAINING_TASK_QUEUE, prefix + EVAL_TASK_QUEUE


@functools.cache
def get_settings() -> Settings:
    """The process's `Settings`, read from the environment once (cached); pydantic's ValidationError when a
    variable is invalid (`describe_settings_error` words it)."""
    return Settings()


def describe_settings_error(exc: ValidationError, prefix: str = "BERT_EVAL_") -> str:
    """One line per invalid setting, named as the environment variable that holds it."""
    lines = []
    for error in exc.errors():
        name = prefix + "_".join(str(part) for part in error["loc"]).upper()
        value = error.get("input")
        shown = f"={value}" if isinstance(value, (str, int, float)) else ""
        lines.append(f"{name}{shown}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def apply_offline_mode(settings: Settings) -> None:
    """Put `huggingface_hub` and `datasets` in offline mode. They read these variables once, when first
    imported, so this runs at process start, before anything imports them."""
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


@functools.cache
def get_temporal_settings() -> TemporalSettings:
    """The process's `TemporalSettings` (address, namespace, TLS), read from the environment once (cached)."""
    return TemporalSettings()
