#!/usr/bin/env bash
# The GPU measurements the course ships (issue "Full-scale GPU pretraining"), in one go, on one GPU:
#
#   bash scripts/gpu_measurements.sh [TAG]        # TAG names the files, e.g. h100 (default: gpu)
#
# writes, in data/results/ (each JSON records the hardware, the software versions and the commit):
#   throughput_TAG.json   model only: MAE ViT-B/16 and ViT-L/16 at 224, 75% masking, batch sweep;
#                         the fast path, the plain path and transformers' ViTMAEForPreTraining
#   e2e_TAG.json          a generated ImageNet-format folder of 20k JPEGs (~500x375) through the CPU
#                         and the GPU data pipelines: loader-only and training images/s
#   table2_TAG.json       ViT-L, asymmetric encoder vs encoder with mask tokens, decoder depth 8 and 1
#
# Each step is a separate command, so a failed one does not lose the others. About 15-25 minutes
# on an H100 (compilation included).
set -uo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-gpu}
OUT=data/results
PY=${PYTHON:-python}
mkdir -p "$OUT"

$PY -m mae_course bench --suite model --models mae_vit_base_patch16 mae_vit_large_patch16 \
    --batch-sizes 64 128 256 --steps 20 --warmup 5 --output "$OUT/throughput_$TAG.json"
$PY -m mae_course bench --suite table2 --model mae_vit_large_patch16 --batch-size 64 --decoder-depths 8 1 \
    --steps 10 --warmup 3 --compile --output "$OUT/table2_$TAG.json"
$PY -m mae_course bench --suite e2e --generate 20000 --generate-dir runs/bench/jpegs --model mae_vit_base_patch16 \
    --batch-size 256 --steps 40 --warmup 5 --compile --output "$OUT/e2e_$TAG.json"
