"""The layers hold: the ML core runs without Temporal or a metrics registry (pyproject's import contracts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contracts_are_kept() -> None:
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_importing_the_core_registers_no_metrics_and_loads_no_temporal() -> None:
    probe = (
        "import sys, bert_eval.core.training.finetuning, bert_eval.core.evaluation.batched, "
        "bert_eval.core.evaluation.inference, bert_eval.core.data.snapshot\n"
        "leaked = sorted(m for m in ('prometheus_client', 'temporalio', 'bert_eval.temporal') if m in sys.modules)\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing the core loaded {result.stdout.strip()}"
