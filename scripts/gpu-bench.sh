#!/usr/bin/env bash
# `make bench-gpu` for a GPU box without network access (docs/performance.md, "GPU benchmark").
# On a machine with network access, run `make gpu-kit`; copy the working tree with its .gpu/ to the GPU
# box; there, with the Python that has torch (CUDA):
#   OUT=/path/to/results PYTHON=python3 bash scripts/gpu-bench.sh
# It installs .gpu/whl into /tmp/site (nothing is downloaded), prints nvidia-smi and the library
# versions, imports every module the benchmark needs (a missing one fails here, in seconds, not minutes
# into the run), then runs `benchmarks/bench.py --device cuda` on .gpu/data and .gpu/tokenizer. Written
# to $OUT: latest-cuda.json (rows, skipped rows, raw figures) and bench-gpu.log (everything printed here).
# The bench gets GPU_BENCH_TIMEOUT_S (default 480 s) and then an interrupt, so it still writes the rows
# it has measured when the box is only yours for a fixed time.
#
# Switches (for trying the flow elsewhere):
#   GPU_BENCH_DEVICE=cpu GPU_BENCH_ARGS=--quick   the same flow on CPU with the quick sizes
#   GPU_BENCH_INSTALL=0                           use PYTHON's own packages, install nothing
#   PYTHON=/path/to/python                        default python3 (on the GPU box: the one with torch)
#   --check-kit                                   install the kit, import everything the bench needs except
#                                                 torch, then stop (to try the kit under a Python 3.12 that has
#                                                 the GPU image's other packages but no torch)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
KIT=${GPU_KIT_DIR:-.gpu}
SITE=${GPU_BENCH_SITE:-/tmp/site}
PYTHON=${PYTHON:-python3}
DEVICE=${GPU_BENCH_DEVICE:-cuda}
BENCH_ARGS=${GPU_BENCH_ARGS:-}
INSTALL=${GPU_BENCH_INSTALL:-1}
BENCH_TIMEOUT_S=${GPU_BENCH_TIMEOUT_S:-480}
CHECK_KIT_ONLY=0

die() { echo "gpu-bench: $*" >&2; exit 2; }

case "${1:-}" in
    "") ;;
    --check-kit) CHECK_KIT_ONLY=1 ;;
    *) die "unknown argument '$1' (the only one is --check-kit)" ;;
esac
[ -n "${OUT:-}" ] || die "OUT is not set: set OUT=/some/empty/dir (latest-cuda.json and bench-gpu.log go there)"
mkdir -p "$OUT"
[ -d "$KIT/whl" ] && [ -d "$KIT/data/glue/sst2" ] && [ -d "$KIT/tokenizer" ] \
    || die "$KIT is missing or incomplete: run \`make gpu-kit\` on a machine with network access and copy .gpu/ here with the tree"
KIT=$(cd "$KIT" && pwd)
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python '$PYTHON' (set PYTHON)"

# Modules the kit provides (the GPU image lacks them, or has other versions), and the rest of what
# benchmarks/bench.py imports on the rows that run there (the GPU image has these).
KIT_MODULES="transformers datasets dill multiprocess fsspec pydantic pydantic_core annotated_types typing_inspection typing_extensions structlog opentelemetry.trace opentelemetry.sdk.trace opentelemetry.semconv"
DEVICE_MODULES="numpy pandas pyarrow scipy.stats sklearn.metrics safetensors tokenizers huggingface_hub prometheus_client yaml regex tqdm xxhash"

phase() { echo; echo "== $(date -u +%H:%M:%S) (+${SECONDS}s) $*"; }

gpu_bench() {
    phase "gpu-bench on $(uname -n) ($(nproc) CPUs), $("$PYTHON" --version 2>&1) at $(command -v "$PYTHON")"
    if [ "$INSTALL" = 1 ]; then
        phase "installing $(ls "$KIT"/whl/*.whl | wc -l) wheels from $KIT/whl into $SITE"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$KIT"/whl/*.whl
        export PYTHONPATH="$SITE:$ROOT/services"
    else
        phase "GPU_BENCH_INSTALL=0: using $PYTHON's own packages"
        export PYTHONPATH="$ROOT/services"
    fi
    export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
    export BERT_EVAL_DATA_DIR="$KIT/data"
    # Everything the bench and the libraries write goes to $OUT or /tmp; nothing is downloaded. The hub
    # cache stays where it is: a copy of the pretrained MiniLM there would let the accuracy row run.
    export HF_DATASETS_CACHE=/tmp/gpu-bench/datasets TRITON_CACHE_DIR=/tmp/gpu-bench/triton TORCHINDUCTOR_CACHE_DIR=/tmp/gpu-bench/inductor
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

    phase "importing the modules the benchmark needs"
    "$PYTHON" - "$CHECK_KIT_ONLY" "$KIT/tokenizer" $KIT_MODULES -- $DEVICE_MODULES <<'EOF'
import importlib
import importlib.metadata
import sys

check_kit_only = sys.argv[1] == "1"
tokenizer_dir = sys.argv[2]
split = sys.argv.index("--")
kit_modules, device_modules = sys.argv[3:split], sys.argv[split + 1 :]
failed = []
for name in kit_modules + device_modules:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # any failure to import is what this step is for
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
        continue
    print(f"  {name:28s} {getattr(module, '__version__', '')}  {getattr(module, '__file__', '')}")
if failed:
    sys.exit("gpu-bench: these modules do not import:\n  " + "\n  ".join(failed))
for dist in ("transformers", "datasets", "huggingface_hub", "tokenizers", "accelerate", "torch"):
    try:
        print(f"  version {dist}: {importlib.metadata.version(dist)}")
    except importlib.metadata.PackageNotFoundError:
        print(f"  version {dist}: not installed")

from transformers import AutoTokenizer  # noqa: E402

tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
print(f"  tokenizer {type(tokenizer).__name__}, vocab {tokenizer.vocab_size}: {tokenizer.tokenize('a gripping, funny film')}")

import os  # noqa: E402
from pathlib import Path  # noqa: E402

from bert_eval import telemetry  # noqa: E402,F401  (structlog, OpenTelemetry, prometheus-client)
from bert_eval.core.data.loading import infer_schema, load_splits  # noqa: E402  (datasets, pyarrow, pandas)
from bert_eval.types import DatasetSpec  # noqa: E402  (pydantic)

spec = DatasetSpec.model_validate("glue/sst2")
splits = load_splits(spec, ["train", "validation"], data_dir=Path(os.environ["BERT_EVAL_DATA_DIR"]))
schema = infer_schema(splits["train"], spec)
print(f"  SST-2 from {os.environ['BERT_EVAL_DATA_DIR']}: {', '.join(f'{k} {len(v)} rows' for k, v in splits.items())}; {schema.task.value}, labels {list(schema.label_names)}")

if not check_kit_only:
    import torch

    print(f"  torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        print(f"  device {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
    # What bench.py imports at its top and in the rows that run on the GPU.
    for name in ("bert_eval.core.training.finetuning", "bert_eval.core.evaluation.batched", "bert_eval.core.data.snapshot", "bert_eval.core.evaluation.task_metrics",
                 "transformers.trainer", "accelerate"):
        importlib.import_module(name)
    print("  bert_eval core, transformers.trainer and accelerate import")
EOF
    if [ "$CHECK_KIT_ONLY" = 1 ]; then
        phase "--check-kit: the kit installs and imports; stopping before the benchmark"
        return 0
    fi

    phase "nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi; else echo "nvidia-smi: not found on this machine"; fi

    phase "benchmarks/bench.py --device $DEVICE $BENCH_ARGS (interrupted after ${BENCH_TIMEOUT_S}s)"
    # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of arguments
    local rc=0
    timeout --signal=INT --kill-after=20 "$BENCH_TIMEOUT_S" \
        "$PYTHON" benchmarks/bench.py --device "$DEVICE" --out "$OUT/latest-$DEVICE.json" --tokenizer "$KIT/tokenizer" $BENCH_ARGS \
        || rc=$?
    case $rc in
        0) phase "done: $OUT/latest-$DEVICE.json, $OUT/bench-gpu.log" ;;
        124) phase "the bench ran out of its ${BENCH_TIMEOUT_S}s and was interrupted: $OUT/latest-$DEVICE.json holds the rows measured until then" ;;
        *) phase "the bench failed (exit $rc); $OUT/bench-gpu.log has its output" ;;
    esac
    return "$rc"
}

set -o pipefail
gpu_bench 2>&1 | tee "$OUT/bench-gpu.log"
