"""Lesson 09: model-only pretraining throughput: images/s, step time, MFU and memory, against a peer.

    python -m mae_course bench --suite model --models mae_vit_base_patch16 mae_vit_large_patch16 \
        --batch-sizes 64 256 --profile runs/bench/profile

Each measurement times whole training steps (masking, forward, loss, backward, AdamW update) on
synthetic images already on the device, so the data pipeline is out of the picture. Five
implementations of the same model, timed one after the other in one run, in two fair pairs:

    fast           the course's fast path: bf16 autocast (fp16 + scaler below compute capability 8.0),
                   fused AdamW, scaled_dot_product_attention, its blocks compiled
    peer-compiled  transformers' ViTMAEForPreTraining with the same architecture, dtype, attention
                   kernel (sdpa) and fused AdamW, its blocks compiled the same way
    fast-eager     the fast path without compiling
    peer           the peer without compiling, as its users mostly run it
    plain          the course's model as a beginner would run it: float32, foreach AdamW, eager

``vs_peer`` compares like with like: fast against peer-compiled, fast-eager against peer. Every
row starts from a fresh compiler state (``torch._dynamo.reset()``) and compiles with
``dynamic=False``, so that no row times graphs made for another row's batch size. TF32 (the
tensor cores' 19-bit format for float32 matrix products) is set explicitly for the whole run,
on by default as most users would have it, and recorded: with it off, the plain rows would look
slower than they need be. With ``profile``, a few more steps of each row run under
:mod:`torch.profiler`: a trace per row, and the shares of device time in matrix products and
attention (:func:`time_shares`).

**MFU** (model FLOPs utilisation) is the share of the GPU's peak that the model's own arithmetic
uses:

    MFU = images/s x FLOPs per image of a training step / peak FLOP/s

with FLOPs per image from the architecture (:mod:`mae_course.experiments.flops`: 3 x the forward
pass; an MAE ViT-B/16 step at 75% masking is 58.7 GFLOPs, which ``FlopCounterMode`` confirms) and
the dense 16-bit tensor-core peak of the exact GPU from its datasheet (:data:`PEAK_TFLOPS`), for
every implementation alike, so that the float32 plain path shows how much it leaves on the
table. An unknown GPU gets no MFU (and a note) rather than a wrong one; ``peak_tflops`` sets it.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, NonFiniteLossError
from ..model.registry import build_model, check_mask_ratio, check_model_settings
from ..provenance import git_commit, hardware
from ..train.distributed import resolve_device
from ..train.recipe import make_adamw
from ..train.step import make_train_step
from .flops import mae_flops
from .peer import PEER, build_peer

IMPLEMENTATIONS = ("fast", "peer-compiled", "fast-eager", "peer", "plain")
PAIRS = {"fast": "peer-compiled", "fast-eager": "peer"}  # ours -> the peer under the same settings
SETTINGS = {  # implementation -> (peer?, compiled?, 16-bit autocast and fused AdamW?)
    "fast": (False, True, True),
    "peer-compiled": (True, True, True),
    "fast-eager": (False, False, True),
    "peer": (True, False, True),
    "plain": (False, False, False),
}

# Dense (no sparsity) 16-bit tensor-core peaks from NVIDIA's datasheets, in TFLOP/s, by the exact name
# torch.cuda.get_device_name() gives: bf16 from compute capability 8.0 on; fp16 for the V100 and the
# T4, which have no bf16 (amp="auto" runs fp16 there).
PEAK_TFLOPS = {
    "NVIDIA H200": 989.4,
    "NVIDIA H200 NVL": 835.5,
    "NVIDIA H100 80GB HBM3": 989.4,  # SXM
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA L40S": 362.05,
    "NVIDIA L40": 181.05,
    "NVIDIA L4": 121.0,
    "NVIDIA A10": 125.0,
    "Tesla V100-SXM2-16GB": 125.0,
    "Tesla V100-SXM2-32GB": 125.0,
    "Tesla V100-PCIE-16GB": 112.0,
    "Tesla V100-PCIE-32GB": 112.0,
    "Tesla T4": 65.0,
}


def peak_for(name: str) -> float | None:
    """The dense 16-bit peak of the GPU named exactly ``name``, or None for one the table does not know
    (matching by substring would give an "NVIDIA L40" the L4's 121)."""
    return PEAK_TFLOPS.get(name.strip())


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense 16-bit tensor peak in TFLOP/s, if it is a GPU the table knows."""
    return peak_for(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


@dataclass
class ThroughputConfig:
    models: tuple[str, ...] = ("mae_vit_base_patch16", "mae_vit_large_patch16")
    batch_sizes: tuple[int, ...] = (64, 256)  # 64: the ImageNet recipe's batch per GPU
    implementations: tuple[str, ...] = IMPLEMENTATIONS
    steps: int = 20
    warmup: int = 5  # untimed steps first (compilation, cudnn/cuBLAS autotuning, allocator warm-up)
    mask_ratio: float = 0.75
    device: str = "auto"
    model_overrides: dict[str, Any] | None = None  # e.g. a narrower model for a quick CPU check
    peak_tflops: float | None = None  # None: from the GPU's datasheet (PEAK_TFLOPS)
    tf32: bool = True  # TF32 tensor cores for float32 matrix products
    profile: str | None = None  # a folder: a torch.profiler trace of a few steps of each row
    profile_steps: int = 3

    def validate(self) -> None:
        bad = [i for i in self.implementations if i not in IMPLEMENTATIONS]
        if bad:
            raise ConfigError(f"unknown implementation {bad[0]!r}; choose from {', '.join(IMPLEMENTATIONS)}")
        if any(b < 1 for b in self.batch_sizes) or self.steps < 1 or self.warmup < 0 or self.profile_steps < 1:
            raise ConfigError("batch sizes, steps and profile steps must be at least 1, warmup at least 0")
        if self.profile is not None and Path(self.profile).expanduser().is_file():
            raise ConfigError(f"--profile {self.profile} is a file; give a folder for the traces")
        for model in self.models:
            check_mask_ratio(self.mask_ratio, check_model_settings(model, self.model_overrides or {}))


class _PeerAsMae(torch.nn.Module):
    """The peer behind our model's call signature, so the same training step drives both."""

    def __init__(self, peer: torch.nn.Module):
        super().__init__()
        self.peer = peer

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75):
        out = self.peer(pixel_values=imgs)
        return out.loss, out.logits, out.mask


def build_implementation(name: str, implementation: str, mask_ratio: float, overrides: dict[str, Any] | None):
    """(model, its config) for "ours" or the "peer" implementation of the named architecture."""
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


@contextlib.contextmanager
def tf32_set(enabled: bool):
    """TF32 for float32 matrix products and convolutions, set for a while (and put back)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


MATMUL_WORDS = ("gemm", "matmul", "aten::mm", "aten::bmm", "aten::addmm", "aten::linear", "cutlass", "xmma", "cublas")
ATTENTION_WORDS = ("flash", "fmha", "attention", "sdpa", "attn")


def time_shares(kernels: Iterable[tuple[str, float]]) -> dict[str, float]:
    """``{"matmul": .., "attention": .., "other": ..}``: the shares of the total time of ``kernels``
    (name, self time) spent in matrix products and in attention (judged by the kernel's name)."""
    totals = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for name, seconds in kernels:
        lower = name.lower()
        kind = "attention" if any(w in lower for w in ATTENTION_WORDS) else "other"
        if kind == "other" and any(w in lower for w in MATMUL_WORDS):
            kind = "matmul"
        totals[kind] += seconds
    whole = sum(totals.values())
    return {k: v / whole if whole else 0.0 for k, v in totals.items()}


def profile_steps(step, imgs: torch.Tensor, steps: int, trace: Path) -> dict[str, Any]:
    """Run ``steps`` more steps under torch.profiler; write the trace; return the device-time shares."""
    from torch.profiler import ProfilerActivity, profile

    cuda = imgs.is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(imgs)
        if cuda:
            torch.cuda.synchronize()
    trace.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace))
    if cuda:  # the kernels themselves (their names say what they compute), by their time on the GPU
        timed = [(e.key, e.self_device_time_total / 1e6) for e in prof.key_averages() if e.device_type.name == "CUDA"]
    else:  # the operators, by their own time (a child's time is not counted again in its parent)
        timed = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    shares = time_shares((name, t) for name, t in timed if t > 0)
    return {"trace": str(trace), "device": "cuda" if cuda else "cpu", **{f"{k}_share": v for k, v in shares.items()}}


def measure(cfg: ThroughputConfig, name: str, implementation: str, batch: int, device: torch.device) -> dict:
    """One (model, implementation, batch size) measurement, or the error that stopped it (e.g. OOM)."""
    peer, compiled, fast = SETTINGS[implementation]
    row: dict[str, Any] = {
        "model": name,
        "implementation": implementation,
        "batch_size": batch,
        "compiled": compiled,
        "amp": "auto" if fast else "none",
        "tf32": cfg.tf32,
        "attention": "sdpa",
        "optimizer": "fused" if fast else "foreach",
    }
    model = optimizer = None
    torch._dynamo.reset()  # a fresh compiler: no graphs or dynamic shapes left from another row
    try:
        model, config = build_implementation(name, "peer" if peer else "ours", cfg.mask_ratio, cfg.model_overrides)
        model = model.to(device).train()
        optimizer = make_adamw(model, lr=1e-4, impl="auto" if fast else "foreach")
        step = make_train_step(model, optimizer, mask_ratio=cfg.mask_ratio, amp=row["amp"], compile=compiled)
        torch.manual_seed(0)
        imgs = torch.randn(batch, 3, config["img_size"], config["img_size"], device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with tf32_set(cfg.tf32):
            seconds = time_steps(step, imgs, cfg.steps, cfg.warmup)
            if cfg.profile is not None:
                trace = Path(cfg.profile).expanduser() / f"{name}_{implementation}_{batch}.json.gz"
                row["profile"] = profile_steps(step, imgs, cfg.profile_steps, trace)
        flops = mae_flops(config, cfg.mask_ratio).train_step
        row.update(
            step_ms=seconds * 1000,
            images_per_s=batch / seconds,
            gflops_per_image=flops / 1e9,
            achieved_tflops=batch * flops / seconds / 1e12,
        )
        peak = cfg.peak_tflops or peak_tflops(device)
        row["mfu"] = row["achieved_tflops"] / peak if peak else None
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
    for row in rows:  # the speed-up over the peer under the same settings, measured in the same run
        partner = PAIRS.get(row["implementation"])
        peer = next(
            (
                r
                for r in rows
                if r["implementation"] == partner
                and r["model"] == row["model"]
                and r["batch_size"] == row["batch_size"]
                and "images_per_s" in r
            ),
            None,
        )
        if peer and "images_per_s" in row:
            row["vs_peer"] = row["images_per_s"] / peer["images_per_s"]
    peak = cfg.peak_tflops or peak_tflops(device)
    notes = []
    if peak is None and device.type == "cuda":
        notes.append(
            f"no MFU: the peak of {torch.cuda.get_device_name(device)!r} is not in the table; pass --peak-tflops"
        )
    return {
        "suite": "model",
        "rows": rows,
        "pairs": PAIRS,
        "peer": PEER,
        "peer_version": _peer_version(),
        "peak_tflops": peak,
        "tf32": cfg.tf32,
        "notes": notes,
        "mfu_formula": "images/s x train-step FLOPs per image (3 x forward, mae_course.experiments.flops) / the "
        "GPU's dense 16-bit tensor-core peak",
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
    head = f"{row['model']:>22} {row['implementation']:>13} batch {row['batch_size']:>4}"
    if "error" in row:
        return f"{head}  {row['error']}"
    mfu = f" MFU {row['mfu'] * 100:5.1f}%" if row.get("mfu") is not None else ""
    memory = f" {row['peak_memory_gb']:6.1f} GB" if "peak_memory_gb" in row else ""
    return f"{head} {row['step_ms']:9.1f} ms {row['images_per_s']:9.1f} img/s{mfu}{memory}"


def throughput_text(results: dict[str, Any]) -> str:
    """A printable table of a model-suite result."""
    lines = [
        f"on {results['hardware']['device']} (torch {results['hardware']['torch']}, TF32 "
        f"{'on' if results.get('tf32') else 'off'}); peer: {results['peer']}"
    ]
    for row in results["rows"]:
        partner = results.get("pairs", PAIRS).get(row["implementation"])
        peer = f"  {row['vs_peer']:.2f}x {partner}" if "vs_peer" in row else ""
        shares = row.get("profile")
        profiled = (
            f"  [{shares['matmul_share'] * 100:.0f}% matmul, {shares['attention_share'] * 100:.0f}% attention]"
            if shares
            else ""
        )
        lines.append(row_text(row) + peer + profiled)
    return "\n".join(lines + results.get("notes", []))
