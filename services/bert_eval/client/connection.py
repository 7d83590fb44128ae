"""The settings a client connects with: the environment's (`TEMPORAL_*`, `BERT_EVAL_*`), with the
arguments given to `Client` / `AsyncClient.connect` in their place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from bert_eval.experiment import describe_validation_error
from bert_eval.settings import Settings, TemporalSettings, get_settings, get_temporal_settings

__all__ = ["client_settings"]


def client_settings(
    *,
    address: str | None = None,
    namespace: str | None = None,
    api_key: str | None = None,
    tls: bool | None = None,
    tls_ca_file: str | Path | None = None,
    tls_cert_file: str | Path | None = None,
    tls_key_file: str | Path | None = None,
    tls_server_name: str | None = None,
    task_queue_prefix: str | None = None,
    runs_dir: str | Path | None = None,
) -> tuple[TemporalSettings, Settings]:
    """(Temporal settings, bert-eval settings): the environment's, overridden by the arguments not None.

    Raises ValueError when an argument is invalid (a malformed task-queue prefix, say), and when
    `task_queue_prefix` differs from this process's `BERT_EVAL_TASK_QUEUE_PREFIX`: the workflow ids the
    client operations address are read from that setting, so both must agree.
    """
    temporal: dict[str, Any] = {
        "address": address,
        "namespace": namespace,
        "api_key": SecretStr(api_key) if api_key is not None else None,
        "tls": tls,
        "tls_ca_file": tls_ca_file,
        "tls_cert_file": tls_cert_file,
        "tls_key_file": tls_key_file,
        "tls_server_name": tls_server_name,
    }
    overrides: dict[str, Any] = {"task_queue_prefix": task_queue_prefix, "runs_dir": runs_dir}
    process = get_settings()
    try:
        temporal_settings = TemporalSettings.model_validate(
            {**get_temporal_settings().model_dump(), **_given(temporal)}
        )
        settings = Settings.model_validate({**process.model_dump(), **_given(overrides)})
    except ValidationError as exc:
        raise ValueError(f"invalid client argument: {describe_validation_error(exc)}") from None
    if settings.task_queue_prefix != process.task_queue_prefix:
        raise ValueError(
            f"task_queue_prefix={settings.task_queue_prefix!r} differs from this process's BERT_EVAL_TASK_QUEUE_PREFIX="
            f"{process.task_queue_prefix!r}: set BERT_EVAL_TASK_QUEUE_PREFIX={settings.task_queue_prefix} in the "
            "environment before starting Python (the kernel, for a notebook) and leave the argument out"
        )
    return temporal_settings, settings


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
