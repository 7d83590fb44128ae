"""Connecting to Temporal the same way everywhere (CLI, workers, tests)."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, TLSConfig
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from bert_eval import telemetry
from bert_eval.settings import TemporalSettings, get_temporal_settings
from bert_eval.temporal.names import SEARCH_ATTRIBUTE_NAMES

__all__ = ["SEARCH_ATTRIBUTES", "MissingSearchAttributesError", "connect", "ensure_search_attributes"]

SEARCH_ATTRIBUTES = {name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTE_NAMES}

log = telemetry.get_logger(__name__)


def _tls(settings: TemporalSettings) -> TLSConfig | bool:
    files = (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if not settings.tls and not any(files) and not settings.tls_server_name:
        return bool(settings.api_key)  # API keys require TLS
    return TLSConfig(
        server_root_ca_cert=settings.tls_ca_file.read_bytes() if settings.tls_ca_file else None,
        client_cert=settings.tls_cert_file.read_bytes() if settings.tls_cert_file else None,
        client_private_key=settings.tls_key_file.read_bytes() if settings.tls_key_file else None,
        domain=settings.tls_server_name or None,
    )


async def connect(
    settings: TemporalSettings | None = None, *, runtime: Runtime | None = None, identity: str | None = None
) -> Client:
    """A client with the pydantic data converter and OpenTelemetry tracing (one trace per experiment)."""
    settings = settings or get_temporal_settings()
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        tls=_tls(settings),
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor(telemetry.tracer())],
        runtime=runtime,
        identity=identity,
    )


class MissingSearchAttributesError(RuntimeError):
    """The namespace lacks search attributes bert-eval sets, and this client could not add them."""

    def __init__(self, namespace: str, missing: list[str], cause: str) -> None:
        self.missing = missing
        create = "; ".join(
            f"temporal operator search-attribute create --name {name} --type Keyword --namespace {namespace}"
            for name in missing
        )
        cloud = " ".join(f"--search-attribute {name}=Keyword" for name in missing)
        super().__init__(
            f"Temporal namespace {namespace!r} lacks the search attribute(s) {', '.join(missing)} "
            f"and registering them failed ({cause}); create them once: {create} "
            f"(Temporal Cloud: tcld namespace search-attributes add --namespace {namespace} {cloud})"
        )


async def ensure_search_attributes(client: Client) -> None:
    """Register BertRunId / BertExperimentId if missing.

    Raises MissingSearchAttributesError (one line: the missing names and the commands that create them)
    when they are still missing, e.g. a hosted namespace that forbids registering them from a client:
    workflows started with them would be rejected.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as exc:  # a client without operator rights cannot tell; starting a workflow will
        log.warning(
            "cannot list search attributes", namespace=client.namespace, error=f"{exc.status.name}: {exc.message}"
        )
        return
    missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in existing.custom_attributes}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as exc:
        raise MissingSearchAttributesError(
            client.namespace, sorted(missing), f"{exc.status.name}: {exc.message}"
        ) from exc
    log.info("registered search attributes", attributes=sorted(missing))
