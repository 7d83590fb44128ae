"""Settings that let several deployments share one Temporal namespace, reach Temporal behind another TLS
name, and refuse to start when the namespace lacks bert-eval's search attributes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.service import RPCError, RPCStatusCode

from bert_eval.settings import Settings, TemporalSettings, describe_settings_error, task_queues
from bert_eval.temporal.client import MissingSearchAttributesError, _tls, ensure_search_attributes


def test_without_a_prefix_the_queues_keep_their_names() -> None:
    assert task_queues(Settings()) == ("bert-training-task-queue", "bert-eval-task-queue")


def test_a_prefix_names_both_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERT_EVAL_TASK_QUEUE_PREFIX", "team-a")
    assert task_queues(Settings()) == ("team-a-bert-training-task-queue", "team-a-bert-eval-task-queue")


@pytest.mark.parametrize("prefix", ["Team-A", "team_a", "-a", "a-", "a.b", "x" * 41])
def test_a_prefix_that_is_no_dns_label_is_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    monkeypatch.setenv("BERT_EVAL_TASK_QUEUE_PREFIX", prefix)
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = describe_settings_error(raised.value)
    assert message.startswith(f"BERT_EVAL_TASK_QUEUE_PREFIX={prefix}:") and "lowercase letters" in message


def test_tls_server_name_becomes_the_tls_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_TLS", "true")
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "temporal.internal.example")
    tls = _tls(TemporalSettings())
    assert tls.domain == "temporal.internal.example"


def test_tls_without_server_name_verifies_the_address_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_TLS", "true")
    assert _tls(TemporalSettings()).domain is None


class _Operator:
    def __init__(self, existing: set[str], add_error: RPCError | None) -> None:
        self.existing = existing
        self.add_error = add_error
        self.added: list[str] = []

    async def list_search_attributes(self, request):
        return SimpleNamespace(
            custom_attributes={n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in self.existing}
        )

    async def add_search_attributes(self, request):
        if self.add_error is not None:
            raise self.add_error
        self.added.extend(request.search_attributes)


def test_missing_search_attributes_that_cannot_be_added_name_the_commands() -> None:
    denied = RPCError("request unauthorized", RPCStatusCode.PERMISSION_DENIED, b"")
    client = SimpleNamespace(namespace="ml.a1b2c", operator_service=_Operator({"BertRunId"}, denied))
    with pytest.raises(MissingSearchAttributesError) as raised:
        asyncio.run(ensure_search_attributes(client))
    message = str(raised.value)
    assert "\n" not in message
    assert raised.value.missing == ["BertExperimentId"]
    assert "lacks the search attribute(s) BertExperimentId " in message and "PERMISSION_DENIED" in message
    assert (
        "temporal operator search-attribute create --name BertExperimentId --type Keyword --namespace ml.a1b2c"
        in message
    )
    assert (
        "tcld namespace search-attributes add --namespace ml.a1b2c --search-attribute BertExperimentId=Keyword"
        in message
    )
    assert "--name BertRunId" not in message  # present already


def test_missing_search_attributes_are_registered_when_allowed() -> None:
    operator = _Operator(set(), None)
    asyncio.run(ensure_search_attributes(SimpleNamespace(namespace="default", operator_service=operator)))
    assert sorted(operator.added) == ["BertExperimentId", "BertRunId"]
