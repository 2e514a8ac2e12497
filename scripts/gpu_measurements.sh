#!/usr/bin/env bash
# The GPU measurements the course ships, in one go, on one GPU, in about 7 minutes:
#
#   bash scripts/gpu_measurements.sh OUT_DIR              # on the GPU
#   bash scripts/gpu_measurements.sh OUT_DIR --estimate   # the expected and cautious seconds of each step
#   bash scripts/gpu_measurements.sh OUT_DIR --rehearse   # every step, tiny, on the CPU (tests/test_gpu_script.py)
#
# writes in OUT_DIR (each JSON records the hardware, the software versions and the commit):
#   provenance.json        the GPU (name, driver, compute capability), torch, CUDA, the commit
#   throughput_vit_b.json  MAE ViT-B/16 at 224, 75% masking, batch 64 (the recipe's per GPU) and 256: fast
#   throughput_vit_l.json  path, plain path, transformers' peer, each compiled and eager; 20 timed steps
#                          (ViT-B also profiled: profile/*.json.gz and the matmul / attention shares)
#   table2.json            ViT-L, asymmetric encoder vs encoder with mask tokens, decoder depth 8 and 1
#   e2e.json               5,000 generated ImageNet-sized JPEGs on local disk through the CPU and the GPU
#                          data pipelines: loader-only and training images/s, against the model alone
#   steps.txt              each step's exit status and seconds
#
# Each step is its own command, so that a failed one loses nothing else. The time of each is
# worked out before it runs (mae_course/experiments/budget.py: start-up, model builds, a cold
# compilation per compiled row, and steps x the step time from the FLOPs at an assumed MFU):
# about 160 + 140 + 30 + 85 = 415 s expected on an H100 or H200, about 620 s if everything is
# 1.5 times slower. --estimate prints both for each step.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_measurements.sh OUT_DIR [--estimate|--rehearse]}
MODE=${2:-run}
PY=${PYTHON:-python}
mkdir -p "$OUT"
JPEGS=${JPEGS:-/tmp/mae_course_jpegs}  # the generated JPEGs: local disk, not OUT_DIR (300 MB)
case "$MODE" in run | --estimate | --rehearse) ;; *) echo "unknown mode $MODE: use --estimate or --rehearse" >&2; exit 2 ;; esac

# Rehearsal: the same command lines with tiny settings appended (a later flag wins), on the CPU,
# without the compiled rows (compiling takes minutes on a CPU; tests/test_speed.py covers it).
TINY_MODEL='{"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16, "decoder_num_heads": 2}'
tiny_flags() {  # TINY=(...) for suite $1
    TINY=(--device cpu --model-overrides "$TINY_MODEL" --steps 1 --warmup 0 --no-compile)
    case "$1" in
        model) TINY=(--device cpu --model-overrides "$TINY_MODEL" --steps 1 --warmup 0 --batch-sizes 2
                     --implementations fast-eager peer plain) ;;
        table2) TINY+=(--batch-size 2) ;;
        e2e) TINY+=(--batch-size 4 --generate 24 --image-size 32 --num-workers 1) ;;
    esac
}

step() {  # step NAME SUITE ARGS...: one bench command, timed, its output in OUT/NAME.log
    local name=$1 suite=$2
    shift 2
    local args=(bench --suite "$suite" "$@")
    if [ "$MODE" = --estimate ]; then
        echo "$name: $($PY -m mae_course.experiments.budget "${args[@]}") s (expected, cautious)"
        return
    fi
    if [ "$MODE" = --rehearse ]; then
        tiny_flags "$suite"
        args+=("${TINY[@]}")
    fi
    local start=$SECONDS
    $PY -m mae_course "${args[@]}" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}

if [ "$MODE" = run ] || [ "$MODE" = --rehearse ]; then
    $PY - "$OUT/provenance.json" <<'EOF'
import json, subprocess, sys
import torch
from mae_course.provenance import git_commit, hardware
info = {**hardware(), "git_commit": git_commit()}
if torch.cuda.is_available():
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError as e:
        info["nvidia_smi"] = f"not run: {e}"
json.dump(info, open(sys.argv[1], "w"), indent=1)
EOF
fi

step throughput_vit_b model --models mae_vit_base_patch16 --batch-sizes 64 256 --steps 20 --warmup 3 \
    --profile "$OUT/profile" --output "$OUT/throughput_vit_b.json"
step throughput_vit_l model --models mae_vit_large_patch16 --batch-sizes 64 256 --steps 20 --warmup 3 \
    --output "$OUT/throughput_vit_l.json"
step table2 table2 --model mae_vit_large_patch16 --batch-size 128 --decoder-depths 8 1 --steps 10 --warmup 3 \
    --output "$OUT/table2.json"
step e2e e2e --generate 5000 --generate-dir "$JPEGS" --model mae_vit_base_patch16 --batch-size 256 --steps 30 \
    --warmup 5 --compile --output "$OUT/e2e.json"
