"""Lesson 05: a run's step plan, what one optimizer step of it is, and why a resume must keep it.

A step is ``effective_batch`` images: ``batch_size`` per process, ``accum_iter`` micro-batches,
``processes`` processes. The step count and the lr schedule are counted in such steps, so a
resumed run may split them differently (less memory per micro-batch), but not change their size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError


def step_plan(steps_per_epoch: int, batch_size: int, accum_iter: int, processes: int) -> dict[str, int]:
    """What one optimizer step of a run is: its images, how they are split, and the steps of an epoch.
    A job records it with its settings (``settings["plan"]``); a resumed run must keep it."""
    return {
        "effective_batch": batch_size * accum_iter * processes,
        "batch_size": batch_size,
        "accum_iter": accum_iter,
        "processes": processes,
        "steps_per_epoch": steps_per_epoch,
    }


def saved_plan(ckpt: dict[str, Any], kind: str, path: Path) -> dict[str, int]:
    """The step plan a checkpoint was saved with; for a checkpoint made before plans were recorded, the
    one its settings and its number of processes give (its steps per epoch unknown: 0)."""
    config = ckpt["config"]
    plan = config.get("plan")
    if plan is None:
        run, rng = config[kind], ckpt.get("rng")
        batch, accum = run.get("batch_size"), run.get("accum_iter", 1)
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (batch, accum))
        plan = step_plan(0, batch, accum, len(rng) if isinstance(rng, list) else 1) if ok else None
    least = {"effective_batch": 1, "batch_size": 1, "accum_iter": 1, "processes": 1, "steps_per_epoch": 0}
    if not (isinstance(plan, dict) and all(type(plan.get(k)) is int and plan[k] >= n for k, n in least.items())):
        raise CheckpointError(f"{path} is not a usable checkpoint: its step plan is {plan!r}")
    return plan


def same_steps(saved: dict[str, int], plan: dict[str, int], path: Path, micro_in_epoch: int) -> int:
    """Refuse to resume with steps of another size (another effective batch, or steps per epoch): the
    saved step count and the lr schedule count steps of the saved size. The same images per step split
    otherwise (batch 32 x accum 2 for batch 64: less memory) resume; returns the checkpoint's position
    (``micro_in_epoch``, in its own micro-batches) in this run's micro-batches (a checkpoint is always at a
    step boundary)."""

    def described(p: dict[str, int]) -> str:
        per_epoch = f", {p['steps_per_epoch']} steps per epoch" if p["steps_per_epoch"] else ""
        return (
            f"{p['effective_batch']} images per step (batch {p['batch_size']} x accum {p['accum_iter']} x "
            f"{p['processes']} process{'es' if p['processes'] != 1 else ''}){per_epoch}"
        )

    known = saved["steps_per_epoch"] != 0
    if saved["effective_batch"] != plan["effective_batch"] or (
        known and saved["steps_per_epoch"] != plan["steps_per_epoch"]
    ):
        raise ConfigError(
            f"cannot resume {path} with these settings: it was trained with {described(saved)}; these make "
            f"{described(plan)}. Its step count and lr schedule would not fit: resume with batch x accum x processes "
            f"= {saved['effective_batch']} on the same images, or start over with --overwrite"
        )
    return micro_in_epoch // saved["accum_iter"] * plan["accum_iter"]
