"""A training worker that was asked for a GPU (BERT_EVAL_REQUIRE_GPU, the chart's gpu.enabled) and
finds none exits at once with a one-line reason, instead of training on CPU or waiting for Temporal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_training_worker_requiring_gpu_exits_without_one() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    env = {
        **os.environ,
        "BERT_EVAL_REQUIRE_GPU": "true",
        "BERT_EVAL_METRICS_PORT": "0",
        # Nothing listens here: the worker must fail before it tries to connect.
        "TEMPORAL_ADDRESS": "127.0.0.1:9",
        # Where the training image looks for the node's driver (GKE's mount).
        "LD_LIBRARY_PATH": "/usr/local/nvidia/lib64",
    }
    env.pop("BERT_EVAL_FORCE_CPU", None)
    done = subprocess.run(
        [sys.executable, "-m", "bert_eval", "worker", "training"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "BERT_EVAL_REQUIRE_GPU is set" in lines[0] and "sees no CUDA device" in lines[0]
    assert "gpu.enabled=false" in lines[0]
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in lines[0]  # the path it searched


def test_require_gpu_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from bert_eval.settings import Settings

    assert Settings().require_gpu is False
    monkeypatch.setenv("BERT_EVAL_REQUIRE_GPU", "true")
    assert Settings().require_gpu is True
