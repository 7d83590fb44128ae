"""Connecting to Temporal the same way everywhere (CLI, workers, tests)."""

from __future__ import annotations

import contextlib

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, TLSConfig
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from bert_eval import telemetry
from bert_eval.settings import TemporalSettings, get_temporal_settings
from bert_eval.temporal.names import SEARCH_ATTRIBUTE_NAMES

__all__ = ["SEARCH_ATTRIBUTES", "connect", "ensure_search_attributes"]

SEARCH_ATTRIBUTES = {name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTE_NAMES}

log = telemetry.get_logger(__name__)


def _tls(settings: TemporalSettings) -> TLSConfig | bool:
    files = (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if not settings.tls and not any(files):
        return bool(settings.api_key)  # API keys require TLS
    return TLSConfig(
        server_root_ca_cert=settings.tls_ca_file.read_bytes() if settings.tls_ca_file else None,
        client_cert=settings.tls_cert_file.read_bytes() if settings.tls_cert_file else None,
        client_private_key=settings.tls_key_file.read_bytes() if settings.tls_key_file else None,
    )


async def connect(
    settings: TemporalSettings | None = None, *, runtime: Runtime | None = None, identity: str | None = None
) -> Client:
    """A client with the pydantic data converter and OpenTelemetry tracing (one trace per experiment)."""
    settings = settings or get_temporal_settings()
    kwargs = {"runtime": runtime} if runtime is not None else {}
    if identity:
        kwargs["identity"] = identity
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        tls=_tls(settings),
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor(telemetry.tracer())],
        **kwargs,
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register BertRunId / BertExperimentId if missing. Best effort: hosted namespaces may forbid it."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in existing.custom_attributes}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
            log.info("registered search attributes", attributes=sorted(missing))
    except Exception as exc:  # RPCError of many kinds; the workflows still run if they exist
        with contextlib.suppress(Exception):
            log.warning("could not check/register search attributes", error=str(exc))
