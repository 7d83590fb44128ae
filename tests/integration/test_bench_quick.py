"""`benchmarks/bench.py --quick` end to end, from a copy of the repository as a fresh checkout has it (no
virtualenv inside, no build output, nothing on the import path but the copy's `services/`): every row group
runs and the table is printed. Only the numbers' existence is checked, not their values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# One row (a name's start) per row group: training and evaluation, checkpoints, coordinator, recovery, the
# many-runs row, the evaluation matrix, the search rows and their kill rows.
ROW_GROUPS = (
    "training samples/s, ours",
    "evaluation examples/s, ours",
    "wall time, ",
    "checkpoint overhead at the default policy",
    "experiment wall time, coordinator vs direct call",
    "recovery: retry picked up by the replacement worker",
    "4 tiny runs in one experiment: completed",
    "add one eval set to a finished 8-run experiment",
    "search best objective, bert-eval ASHA vs Optuna standalone",
    "kill survival: trials lost",
)


def _checkout(destination: Path) -> Path:
    """The repository's files as a clone has them: tracked files and new files not ignored (git's view)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted in the working tree is still listed as tracked
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.mark.timeout(2400)
def test_bench_quick_runs_every_row_group_from_a_fresh_checkout(tmp_path: Path, data_dir: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the repository's git metadata to list a fresh checkout's files")
    checkout = _checkout(tmp_path / "checkout")
    assert not (checkout / ".venv").exists() and (checkout / "benchmarks" / "bench.py").is_file()
    out = tmp_path / "bench.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "BERT_EVAL_", "TEMPORAL_"))},
        "PYTHONPATH": str(checkout / "services"),  # the copy's package, and nothing from tests/
        "BERT_EVAL_DATA_DIR": str(data_dir),
    }
    done = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--quick", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=2300,
    )
    assert done.returncode == 0, (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    )
    assert "| row | ours | baseline | ratio | target | note |" in done.stdout
    table = done.stdout[done.stdout.index("| row | ours |") :]
    for group in ROW_GROUPS:
        assert f"| {group}" in table, f"no row starting {group!r} in:\n{table}"
    record = json.loads(out.read_text())
    assert record["skipped"] == {}, record["skipped"]
    assert len(record["rows"]) >= len(ROW_GROUPS)
