"""The core's subpackages: each exports its public names, and exporting them costs nothing until used."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

SUBPACKAGES = ["storage", "data", "training", "evaluation", "search", "statistics"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_exported_name_resolves_to_its_definition(name: str) -> None:
    package = importlib.import_module(f"bert_eval.core.{name}")
    assert sorted(package.__all__) == dir(package)
    for export in package.__all__:
        value = getattr(package, export)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # a type alias (e.g. ProgressCallback) has no defining module to check
        assert getattr(value, "__module__", "").startswith(f"bert_eval.core.{name}."), export


def test_an_unknown_name_is_an_attribute_error() -> None:
    package = importlib.import_module("bert_eval.core.search")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        package.nothing  # noqa: B018


def test_workflow_payloads_import_no_ml_stack() -> None:
    """The CLI's status, wait and compare paths import the payloads; torch would cost them seconds."""
    code = "import sys, bert_eval.temporal.payloads; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
