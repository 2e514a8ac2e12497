"""Plumbing shared by every training command: the run folder, the log, mixed precision,
random-number state, and a sampler that can resume inside an epoch."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from .errors import ConfigError, DataError
from .schedule import scaled_lr

CHECKPOINT = "checkpoint-last.pth"
AMP_MODES = ("auto", "bf16", "fp16", "none")


def check_run_dir(output_dir: str, resume: str | None, overwrite: bool) -> tuple[Path, Path | None]:
    """Check the output folder and the checkpoint to resume from, before any work starts.

    Returns ``(folder, checkpoint to resume or None)`` and changes nothing on disk. A folder
    that already holds a run is only reused with ``resume`` (continue it) or ``overwrite``
    (start over): never silently.
    """
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {out} exists and is not a folder")
    resume_path = None
    if resume is not None:
        resume_path = out / CHECKPOINT if resume == "auto" else Path(resume).expanduser()
        if not resume_path.is_file():
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {resume_path}")
    elif (out / CHECKPOINT).exists() and not overwrite:
        raise ConfigError(
            f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue it, "
            "--overwrite to start over, or choose another --output-dir"
        )
    return out, resume_path


def start_run_dir(out: Path, fresh: bool) -> None:
    """Create the output folder; a fresh run starts a new log."""
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        (out / "log.jsonl").unlink(missing_ok=True)


class JsonLog:
    """An append-only JSON-lines file; only the main process writes."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def autocast_for(device: torch.device, amp: str) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """Mixed precision for the forward pass: ``(context factory, needs a GradScaler)``.

    Under autocast, matrix products and convolutions run in 16 bits while reductions, norms and
    the loss stay in float32; the weights and the optimizer stay in float32. "auto" is bf16 on
    GPUs that support it (float32's range, so no loss scaler is needed), fp16 with a scaler on
    older GPUs (fp16 gradients would underflow to 0 without one), and full precision on the CPU.
    "bf16" and "fp16" work on the CPU too (``torch.autocast("cpu", ...)``): fast only on CPUs
    with 16-bit units, but they let the tests check mixed precision without a GPU.
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "none"
    if amp == "none":
        return contextlib.nullcontext, False
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), amp == "fp16"


def rng_state() -> dict[str, Any]:
    """This process's random generators (CPU, and every GPU), as tensors a checkpoint can hold."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SkipFirst(Sampler):
    """A sampler without its first ``skip`` indices, to resume in the middle of an epoch.

    Only indices are skipped, so no image is loaded for nothing.
    """

    def __init__(self, sampler: Sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure atomically (a reader never sees half a PNG)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_scale`` (1 unless layer-wise decay set one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


RESUMABLE = ("model", "optimizer", "epoch", "step", "micro_in_epoch", "rng")


def gather_rng(distributed: bool) -> Any:
    """This process's RNG state, or every rank's (a list) in a multi-process run."""
    state = rng_state()
    if not distributed:
        return state
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def restore_rng(saved: Any, rank: int, world_size: int) -> bool:
    """Restore this process's generators; False when the run was saved with another process count."""
    if isinstance(saved, list):
        if len(saved) != world_size:
            return False
        saved = saved[rank]
    set_rng_state(saved)
    return True


def changed_settings(saved: dict[str, Any], now: dict[str, Any], ignored: set[str]) -> list[str]:
    """'name old -> new' for every setting that differs between a saved run and this one."""
    return [
        f"{k} {saved[k]} -> {now[k]}" for k in sorted(saved) if k not in ignored and k in now and saved[k] != now[k]
    ]


class StepPlan:
    """How a run walks its data: this process's sampler, and the step counts and peak lr that follow.

    The effective batch is ``batch_size x accum_iter x processes``; the lr is ``lr`` when given, else
    ``blr x effective batch / 256``. Too small a dataset for one effective batch is a DataError.
    """

    def __init__(self, dataset: Dataset, rank: int, world_size: int, seed: int, batch_size: int, accum_iter: int,
                 epochs: int, warmup_epochs: float, blr: float, lr: float | None, what: str = "the dataset"):  # fmt: skip
        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // batch_size // accum_iter
        self.effective_batch = batch_size * accum_iter * world_size
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{what} has {len(dataset)} images, fewer than one effective batch of {self.effective_batch} "
                f"(batch {batch_size} x accum {accum_iter} x {world_size} processes); use a smaller --batch-size"
            )
        self.total_steps = epochs * self.steps_per_epoch
        self.warmup_steps = round(warmup_epochs * self.steps_per_epoch)
        self.peak_lr = lr if lr is not None else scaled_lr(blr, self.effective_batch)
