#!/bin/bash
# Multi-node MAE pretraining on ImageNet-1K with SLURM and torchrun (c10d rendezvous).
#
#   sbatch scripts/slurm_pretrain_imagenet.sh                       # ViT-B/16, 800 epochs
#   DATA=/data/imagenet MODEL=mae_vit_large_patch16 sbatch ...      # another dataset or model
#
# One torchrun per node starts one process per GPU; torchrun's c10d rendezvous on the first
# node joins them. The effective batch is nodes x GPUs per node x --batch-size x --accum-iter:
# here 8 x 8 x 64 x 1 = 4096, the paper's, and the lr follows it (blr 1.5e-4 x 4096 / 256).
# Only rank 0 writes the log and checkpoints. The job can be requeued: if the output folder
# already holds a checkpoint, it resumes from it (model, optimizer, scaler, schedule, RNG).
# Speed: bf16 autocast and fused AdamW are the defaults on GPUs; --compile compiles the model;
# --data-pipeline auto decodes the JPEGs on the GPUs (prepare the data first with
# `python -m mae_course prepare`, see lesson 09). Drop --compile if your torch cannot compile.
#
#SBATCH --job-name=mae-pretrain
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out

set -euo pipefail

DATA=${DATA:-/datasets/imagenet}             # ImageNet-1K: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG
MODEL=${MODEL:-mae_vit_base_patch16}
OUT=${OUT:-runs/${MODEL}_in1k_800ep}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
BATCH_PER_GPU=${BATCH_PER_GPU:-64}
RDZV_PORT=${RDZV_PORT:-29500}

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
resume=()
if [ -f "$OUT/checkpoint-last.pth" ]; then
    resume=(--resume)
fi

# 8 processes share a node's 64 cores: each process gets 8, and loads with 7 DataLoader workers by
# default (its cores minus itself; --num-workers is capped at its 8). Its own threads: 1 each, as
# torchrun sets it, since the GPUs compute and the workers decode.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

srun torchrun \
    --nnodes "$SLURM_NNODES" \
    --nproc_per_node "$GPUS_PER_NODE" \
    --rdzv_id "$SLURM_JOB_ID" \
    --rdzv_backend c10d \
    --rdzv_endpoint "$head_node:$RDZV_PORT" \
    -m mae_course pretrain \
    --data "$DATA" \
    --model "$MODEL" \
    --image-size 224 \
    --norm-pix-loss \
    --batch-size "$BATCH_PER_GPU" \
    --accum-iter 1 \
    --blr 1.5e-4 \
    --weight-decay 0.05 \
    --epochs 800 \
    --warmup-epochs 40 \
    --data-pipeline auto \
    --compile \
    --output-dir "$OUT" \
    "${resume[@]}"
