"""Shared fixtures: a tiny random BERT (seconds per run), the real SST-2 mirror, a fresh runs dir."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules of `compute` tests first, then those with the most slow tests, then those with the most
    integration tests; the order within a module is kept. `make test` hands whole modules to its processes
    in this order (`--dist loadscope --no-loadscope-reorder`): the modules that keep a core busy for minutes
    start at once, and the ones that mostly wait on workers and timeouts share the cores around them."""
    compute, slow, integration = Counter[Path](), Counter[Path](), Counter[Path]()
    for item in items:
        compute[item.path] += item.get_closest_marker("compute") is not None
        slow[item.path] += item.get_closest_marker("slow") is not None
        integration[item.path] += item.get_closest_marker("integration") is not None
    items.sort(key=lambda item: (-compute[item.path], -slow[item.path], -integration[item.path]))


@contextlib.contextmanager
def _own_environment() -> Iterator[None]:
    """os.environ as it was on entry, restored on exit, and the settings read from it (cached per process
    by bert_eval.settings) read afresh on both sides: a CLI called in-process reads the test's variables."""
    from bert_eval.settings import get_settings, get_temporal_settings

    def forget() -> None:
        get_settings.cache_clear()
        get_temporal_settings.cache_clear()

    with mock.patch.dict(os.environ):
        forget()
        try:
            yield
        finally:
            forget()


@pytest.fixture(scope="module", autouse=True)
def _module_environment() -> Iterator[None]:
    """What a module's fixtures put in os.environ is gone after the module (a benchmark script imported
    in-process sets BERT_EVAL_LOG_LEVEL=WARNING, which every worker started later would inherit)."""
    with _own_environment():
        yield


@pytest.fixture(autouse=True)
def _test_environment() -> Iterator[None]:
    """Each test starts from its module's environment, whatever the previous test set."""
    with _own_environment():
        yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "glue" / "sst2" / "train.tsv").is_file():
        pytest.fail(f"SST-2 mirror not found under {SHARED_DATA}; set BERT_EVAL_TEST_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with the real MiniLM WordPiece tokenizer."""
    from support.harness import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bert_runs"
    path.mkdir()
    return path
