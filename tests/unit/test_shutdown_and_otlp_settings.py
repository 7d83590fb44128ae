"""Settings the chart passes through the environment: the workers' graceful-shutdown wait and the OTLP
endpoint (which must carry a scheme)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from bert_eval import telemetry
from bert_eval.settings import Settings, describe_settings_error
from bert_eval.temporal.worker import WorkerKind, graceful_shutdown_timeout


def test_graceful_shutdown_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The chart sets BERT_EVAL_GRACEFUL_SHUTDOWN_S = terminationGracePeriodSeconds - shutdownMarginSeconds.
    monkeypatch.setenv("BERT_EVAL_GRACEFUL_SHUTDOWN_S", "270")
    settings = Settings()
    assert graceful_shutdown_timeout(WorkerKind.training, settings) == timedelta(seconds=270)
    assert graceful_shutdown_timeout(WorkerKind.eval, settings) == timedelta(seconds=270)


def test_graceful_shutdown_defaults_per_worker_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BERT_EVAL_GRACEFUL_SHUTDOWN_S", raising=False)
    settings = Settings()
    assert graceful_shutdown_timeout(WorkerKind.training, settings) == timedelta(seconds=90)
    assert graceful_shutdown_timeout(WorkerKind.eval, settings) == timedelta(seconds=30)


def test_negative_graceful_shutdown_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERT_EVAL_GRACEFUL_SHUTDOWN_S", "-5")
    with pytest.raises(ValidationError, match="graceful_shutdown_s"):
        Settings()


@pytest.mark.parametrize(
    "endpoint", ["http://otel-collector.observability:4317", "https://collector.example.com", "http://10.0.0.7:4317/"]
)
def test_otlp_endpoints_with_a_scheme_are_accepted(endpoint: str) -> None:
    assert telemetry.check_otlp_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    "endpoint", ["otel-collector.observability:4317", "localhost:4317", "grpc://collector:4317", "http://"]
)
def test_otlp_endpoints_without_scheme_or_host_are_refused_with_the_fix(endpoint: str) -> None:
    with pytest.raises(ValueError) as caught:
        telemetry.check_otlp_endpoint(endpoint, source="OTEL_EXPORTER_OTLP_ENDPOINT")
    message = str(caught.value)
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r}" in message
    assert "http://otel-collector.observability:4317" in message


def test_tracing_setup_refuses_a_scheme_less_endpoint_before_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_TRACING_CONFIGURED", False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4317")
    with pytest.raises(ValueError, match="needs a scheme and a host"):
        telemetry.configure_tracing("bert-eval-test")
    assert telemetry._TRACING_CONFIGURED is False


def test_a_training_worker_refuses_concurrent_fine_tunes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two HF Trainers in one process reset each other's Accelerate state (`AcceleratorState
    object has no attribute distributed_type`): refuse, and say why."""
    monkeypatch.setenv("BERT_EVAL_TRAINING_CONCURRENCY", "4")
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = describe_settings_error(raised.value)
    assert message.startswith("BERT_EVAL_TRAINING_CONCURRENCY=4: a training worker runs one fine-tune at a time")
    assert "training.replicas" in message


def test_the_worker_names_each_invalid_setting_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bert_eval.cli import app

    monkeypatch.setenv("BERT_EVAL_METRICS_PORT", "999999")
    monkeypatch.setenv("BERT_EVAL_TRAINING_CONCURRENCY", "2")
    result = CliRunner().invoke(app, ["worker", "training"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "invalid settings: BERT_EVAL_METRICS_PORT=999999: Input should be less than or equal to 65535; " in output
    assert "BERT_EVAL_TRAINING_CONCURRENCY=2: a training worker runs one fine-tune at a time" in output
    assert "Traceback" not in output


def test_a_worker_exempts_its_start_up_heap_from_full_collections() -> None:
    import gc

    from bert_eval.temporal.worker import _freeze_startup_heap

    assert gc.get_freeze_count() == 0
    try:
        _freeze_startup_heap()
        frozen = gc.get_freeze_count()
        # What start-up imported (torch, transformers, temporalio, ...) is no longer scanned.
        assert frozen > 100_000 and len(gc.get_objects()) < frozen
    finally:
        gc.unfreeze()
