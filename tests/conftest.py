"""Shared fixtures: a tiny random BERT (seconds per run), the real SST-2 mirror, a fresh runs dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

# Tests never reach the hub. `huggingface_hub` and `datasets` read these once, at import, so they are
# set here, before any test module imports them (setting them later in a test has no effect).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BERT_EVAL_TEST_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module", autouse=True)
def _module_environment() -> Iterator[None]:
    """What a module's fixtures put in os.environ is gone after the module (a benchmark script imported
    in-process sets BERT_EVAL_LOG_LEVEL=WARNING, which every worker started later would inherit)."""
    with mock.patch.dict(os.environ):
        yield


@pytest.fixture(autouse=True)
def _test_environment() -> Iterator[None]:
    """Each test starts from its module's environment, whatever the previous test set."""
    with mock.patch.dict(os.environ):
        yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "glue" / "sst2" / "train.tsv").is_file():
        pytest.fail(f"SST-2 mirror not found under {SHARED_DATA}; set BERT_EVAL_TEST_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with the real MiniLM WordPiece tokenizer."""
    from integration.harness import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bert_runs"
    path.mkdir()
    return path
