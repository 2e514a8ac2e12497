"""Lesson 09: model-only pretraining throughput: images/s, step time, MFU and memory, against a peer.

    python -m mae_course bench --suite model --models mae_vit_base_patch16 mae_vit_large_patch16 \
        --batch-sizes 64 128 256 --implementations fast plain peer

Each measurement times whole training steps (masking, forward, loss, backward, AdamW update) on
synthetic images already on the device, so the data pipeline is out of the picture. Three
implementations of the same model, timed one after the other in one run:

    fast    the course's fast path: bf16 autocast (fp16 + scaler where bf16 is missing), fused AdamW,
            torch.compile, scaled_dot_product_attention
    plain   the course's model as a beginner would run it: fp32, foreach AdamW, no compile
    peer    transformers' ViTMAEForPreTraining with the same architecture, dtype (the fast path's
            autocast), attention kernel (sdpa) and fused AdamW, in eager mode as its users run it

**MFU** (model FLOPs utilisation) is the share of the GPU's peak that the model's own arithmetic
uses:

    MFU = images/s x FLOPs per image of a training step / peak FLOP/s

with FLOPs per image from the architecture (:mod:`mae_course.experiments.flops`: 3 x the forward pass; an
MAE ViT-B/16 step at 75% masking is 58.7 GFLOPs) and the peak of the GPU's dense bf16 tensor
cores from its datasheet (989 TFLOP/s for an H100 SXM or H200), for every implementation alike, so
that the fp32 plain path shows how much it leaves on the table. On a CPU there is no meaningful
peak and MFU is left out unless ``peak_tflops`` is given.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import ConfigError, NonFiniteLossError
from ..model.registry import MODEL_CONFIGS, build_model, check_model_settings
from ..provenance import git_commit, hardware
from ..train.distributed import resolve_device
from ..train.recipe import make_adamw
from ..train.step import make_train_step
from .flops import mae_flops
from .peer import PEER, build_peer

IMPLEMENTATIONS = ("fast", "plain", "peer")

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s. Checked in order:
# the first name contained in torch.cuda.get_device_name() wins.
PEAK_BF16_TFLOPS = {
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM (HBM3)
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,  # fp16 tensor cores (no bf16)
}


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 tensor peak in TFLOP/s, if it is a GPU the table knows."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


@dataclass
class ThroughputConfig:
    models: tuple[str, ...] = ("mae_vit_base_patch16", "mae_vit_large_patch16")
    batch_sizes: tuple[int, ...] = (64, 128, 256)
    implementations: tuple[str, ...] = IMPLEMENTATIONS
    steps: int = 20
    warmup: int = 5  # untimed steps first (compilation, cudnn/cuBLAS autotuning, allocator warm-up)
    mask_ratio: float = 0.75
    device: str = "auto"
    model_overrides: dict[str, Any] | None = None  # e.g. a narrower model for a quick CPU check
    peak_tflops: float | None = None  # None: from the GPU's datasheet (PEAK_BF16_TFLOPS)

    def validate(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_CONFIGS]
        if unknown:
            raise ConfigError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODEL_CONFIGS)}")
        bad = [i for i in self.implementations if i not in IMPLEMENTATIONS]
        if bad:
            raise ConfigError(f"unknown implementation {bad[0]!r}; choose from {', '.join(IMPLEMENTATIONS)}")
        if any(b < 1 for b in self.batch_sizes) or self.steps < 1 or self.warmup < 0:
            raise ConfigError("batch sizes and steps must be at least 1, warmup at least 0")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask ratio must be between 0 and 1 (exclusive), got {self.mask_ratio}")
        for model in self.models:
            check_model_settings(model, self.model_overrides or {})


class _PeerAsMae(torch.nn.Module):
    """The peer behind our model's call signature, so the same training step drives both."""

    def __init__(self, peer: torch.nn.Module):
        super().__init__()
        self.peer = peer

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75):
        out = self.peer(pixel_values=imgs)
        return out.loss, out.logits, out.mask


def build_implementation(name: str, implementation: str, mask_ratio: float, overrides: dict[str, Any] | None):
    """(model, settings of its step) for one implementation of the named architecture."""
    model = build_model(name, **(overrides or {}))
    if implementation == "peer":
        return _PeerAsMae(build_peer(model.config, mask_ratio)), model.config
    return model, model.config


def time_steps(step, imgs: torch.Tensor, steps: int, warmup: int) -> float:
    """Mean seconds per step after ``warmup`` steps; syncs the GPU only around the timed loop."""
    for _ in range(warmup):
        step(imgs)
    if imgs.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(imgs)
    if imgs.is_cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    if not torch.isfinite(loss.detach()).item():
        raise NonFiniteLossError(f"the loss became {loss.item()} while timing the steps")
    return seconds


def measure(cfg: ThroughputConfig, name: str, implementation: str, batch: int, device: torch.device) -> dict:
    """One (model, implementation, batch size) measurement, or the error that stopped it (e.g. OOM)."""
    row: dict[str, Any] = {"model": name, "implementation": implementation, "batch_size": batch}
    model = optimizer = None
    try:
        model, config = build_implementation(name, implementation, cfg.mask_ratio, cfg.model_overrides)
        model = model.to(device).train()
        fast = implementation in ("fast", "peer")
        optimizer = make_adamw(model, lr=1e-4, impl="auto" if fast else "foreach")
        step = make_train_step(model, optimizer, mask_ratio=cfg.mask_ratio, amp="auto" if fast else "none",
                               compile=implementation == "fast")  # fmt: skip
        torch.manual_seed(0)
        imgs = torch.randn(batch, 3, config["img_size"], config["img_size"], device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_steps(step, imgs, cfg.steps, cfg.warmup)
        flops = mae_flops(config, cfg.mask_ratio).train_step
        row.update(step_ms=seconds * 1000, images_per_s=batch / seconds, gflops_per_image=flops / 1e9,
                   achieved_tflops=batch * flops / seconds / 1e12)  # fmt: skip
        peak = cfg.peak_tflops or peak_tflops(device)
        if peak:
            row["mfu"] = row["achieved_tflops"] / peak
        if device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
    except Exception as e:  # noqa: BLE001 - one failed configuration must not lose the others
        row["error"] = f"{type(e).__name__}: {e}"
    finally:
        del model, optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def throughput(cfg: ThroughputConfig, progress=print) -> dict[str, Any]:
    """Every (model, batch size, implementation) of ``cfg``, timed in this one run."""
    cfg.validate()
    device = resolve_device(cfg.device)
    rows = []
    for name in cfg.models:
        for batch in cfg.batch_sizes:
            for implementation in cfg.implementations:
                row = measure(cfg, name, implementation, batch, device)
                rows.append(row)
                progress(row_text(row))
    for row in rows:  # the speed-up over the peer, measured in the same run
        peer = next((r for r in rows if r["implementation"] == "peer" and r["model"] == row["model"]
                     and r["batch_size"] == row["batch_size"] and "images_per_s" in r), None)  # fmt: skip
        if peer and "images_per_s" in row:
            row["vs_peer"] = row["images_per_s"] / peer["images_per_s"]
    return {
        "suite": "model",
        "rows": rows,
        "peer": PEER,
        "peer_version": _peer_version(),
        "peak_tflops": cfg.peak_tflops or peak_tflops(device),
        "mfu_formula": "images/s x train-step FLOPs per image (3 x forward, mae_course.flops) / peak dense bf16 FLOP/s",
        "settings": asdict(cfg),
        "hardware": hardware(),
        "git_commit": git_commit(),
    }


def _peer_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return f"transformers {transformers.__version__}"


def row_text(row: dict[str, Any]) -> str:
    head = f"{row['model']:>22} {row['implementation']:>5} batch {row['batch_size']:>4}"
    if "error" in row:
        return f"{head}  {row['error']}"
    mfu = f" MFU {row['mfu'] * 100:5.1f}%" if "mfu" in row else ""
    memory = f" {row['peak_memory_gb']:6.1f} GB" if "peak_memory_gb" in row else ""
    return f"{head} {row['step_ms']:9.1f} ms {row['images_per_s']:9.1f} img/s{mfu}{memory}"


def throughput_text(results: dict[str, Any]) -> str:
    """A printable table of a model-suite result."""
    lines = [f"on {results['hardware']['device']} (torch {results['hardware']['torch']}); peer: {results['peer']}"]
    for row in results["rows"]:
        peer = f"  {row['vs_peer']:.2f}x peer" if "vs_peer" in row and row["implementation"] != "peer" else ""
        lines.append(row_text(row) + peer)
    return "\n".join(lines)
