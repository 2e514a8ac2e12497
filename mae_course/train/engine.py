"""Lessons 05 and 07: the one training loop, shared by pretraining, fine-tuning and linear probing.

:func:`train_one_epoch` walks one epoch of micro-batches. Every ``accum_iter`` of them make one
optimizer step: the lr is set for the step, each micro-batch adds its gradient (DDP all-reduces
only on the last one), then the optimizer updates. The loss stays on the device and is read
back only when a log line is written, so the GPU never waits for the CPU. The loop stops early,
at a step boundary, when Ctrl-C was pressed (:class:`~mae_course.train.run.Run`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from ..errors import NonFiniteLossError
from .distributed import mean_across_ranks
from .recipe import Schedule, set_lr
from .run import Run
from .step import TrainStep


def progress_bar(schedule: Schedule, run: Run, desc: str, show: bool) -> tqdm:
    """A job's one progress bar: every optimizer step of the run, from where a resumed run stands."""
    return tqdm(
        total=schedule.total_steps,
        initial=run.progress.step,
        desc=desc,
        unit="step",
        disable=not show,
        dynamic_ncols=True,
    )


def epoch_indices(sampler: DistributedSampler, epoch: int, skip: int = 0) -> list[int]:
    """This process's image indices of ``epoch``, in order, without the first ``skip`` (already
    trained on, when a run resumes mid-epoch)."""
    sampler.set_epoch(epoch)
    return list(sampler)[skip:]


def check_finite(loss: float, run: Run) -> None:
    """Stop the run, without saving, when the loss is NaN or infinite."""
    if not math.isfinite(loss):
        kept = f" at {run.checkpoint_path}" if run.checkpoint_path.exists() else ""
        raise NonFiniteLossError(
            f"the loss became {loss} by step {run.progress.step} (epoch {run.progress.epoch + 1}); stopped without "
            f"saving, so the last good checkpoint is kept{kept}. Try a lower --blr or a longer warmup"
        )


def train_one_epoch(
    step: TrainStep,
    batches: Iterable[tuple[torch.Tensor, ...]],
    schedule: Schedule,
    run: Run,
    *,
    images_per_micro: int,
    log_every: int = 10,
    on_step: Callable[[int, float], None] | None = None,
    bar: tqdm | None = None,
) -> float | None:
    """Train from ``run.progress`` to the end of the epoch.

    Args:
        step: the training step (model, optimizer, loss, mixed precision, accumulation).
        batches: this epoch's remaining micro-batches, as tuples of device tensors for ``step``.
        schedule: the number of steps and the lr of each.
        run: the run's position (updated as the loop goes), its log, and whether Ctrl-C was pressed.
        images_per_micro: images in one micro-batch over all processes (for images/s).
        log_every: optimizer steps between log lines (the only times the loss is read back).
        on_step: called with ``(step, loss)`` after every optimizer step; it reads the loss back,
            so it is for tests and notebooks, not for speed.
        bar: the run's progress bar (one for the whole run, not one per epoch), moved one step
            per optimizer step and showing the latest loss, lr and images/s.

    Returns:
        the epoch's mean loss over all processes, or None when Ctrl-C stopped it at a step boundary.
    """
    progress, accum = run.progress, step.accum_iter
    micro_per_epoch = schedule.steps_per_epoch * accum
    device = next(step.module.parameters()).device
    step.module.train()
    bar = bar if bar is not None else tqdm(disable=True)
    epoch_sum = torch.tensor(progress.epoch_loss_sum, device=device)  # summed on the device: no host sync
    window_sum, window_count, window_start = torch.zeros((), device=device), 0, time.perf_counter()
    epoch_start = time.perf_counter()

    for micro, inputs in enumerate(batches, start=progress.micro_in_epoch):
        if micro >= micro_per_epoch:
            break  # an incomplete accumulation window at the end of the data
        if micro % accum == 0:
            lr = schedule.lr(progress.step)
            set_lr(step.optimizer, lr)
        last_micro = (micro + 1) % accum == 0
        loss = step.forward_backward(*inputs, sync=last_micro)  # DDP all-reduces on the last micro-batch only
        epoch_sum += loss
        window_sum += loss
        window_count += 1
        if not last_micro:
            continue

        step.update()
        progress.step += 1
        progress.micro_in_epoch = micro + 1
        progress.epoch_loss_count += accum
        bar.update(1)
        if on_step is not None:
            on_step(progress.step, loss.item())
        if progress.step % log_every == 0 or progress.micro_in_epoch == micro_per_epoch:
            mean = mean_across_ranks(window_sum / window_count).item()  # the one host sync per log line
            check_finite(mean, run)
            images_per_s = window_count * images_per_micro / (time.perf_counter() - window_start)
            record = {
                "step": progress.step,
                "epoch": progress.epoch + progress.micro_in_epoch / micro_per_epoch,
                "loss": mean,
                "lr": lr,
                "images_per_s": images_per_s,
            }
            if step.grad_sync_check:
                record["grad_sync_max_diff"] = step.grad_sync_diff
            run.log.write(record)
            bar.set_postfix(
                epoch=f"{progress.epoch + 1}", loss=f"{mean:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.0f}"
            )
            window_sum.zero_()
            window_count, window_start = 0, time.perf_counter()
        if run.stop_requested:  # Ctrl-C: stop here, where the position and the random generators agree
            break

    progress.epoch_loss_sum = epoch_sum.item()
    progress.seconds += time.perf_counter() - epoch_start
    if run.stop_requested and progress.micro_in_epoch < micro_per_epoch:
        return None
    epoch_mean = mean_across_ranks(epoch_sum / max(1, progress.epoch_loss_count)).item()
    check_finite(epoch_mean, run)
    return epoch_mean
