"""Checks for lesson 09: the batch arithmetic of a full-scale run, and its duration."""

from __future__ import annotations

import math

from ..experiments.scaling import batch_plan as ref_batch_plan
from ..experiments.scaling import pretraining_hours as ref_pretraining_hours
from ._core import CheckFailed, call, exercise

_PLAN = "batch_plan"
_HOURS = "pretraining_hours"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


@exercise(_PLAN, "accumulation steps that reach the target batch exactly, the lr scaled by the effective batch")
def check_batch_plan(fn) -> None:
    for target, per_gpu, gpus, blr in [(4096, 64, 8, 1.5e-4), (4096, 128, 32, 1.5e-4), (4096, 256, 1, 1.5e-4),
                                       (1024, 32, 4, 1e-3), (4096, 64, 64, 1.5e-4)]:  # fmt: skip
        case = f"target {target}, {per_gpu} per GPU, {gpus} GPUs, blr {blr}"
        got = call(_PLAN, fn, target, per_gpu, gpus, blr, case=case)
        try:
            accum, lr = got
        except (TypeError, ValueError):
            raise CheckFailed(f"{_PLAN} should return (accum_iter, lr), got {got!r}") from None
        want = ref_batch_plan(target, per_gpu, gpus, blr)
        if accum != want.accum_iter:
            if accum == target // per_gpu:
                raise CheckFailed(
                    f"{_PLAN}: on {case}, accum_iter {accum} forgets the GPUs: each step sees {per_gpu} x {gpus} images"
                )
            raise CheckFailed(
                f"{_PLAN}: on {case}, expected accum_iter {want.accum_iter} (so that {per_gpu} x {gpus} x accum = {target}), got {accum}"
            )
        if not isinstance(accum, int):
            raise CheckFailed(f"{_PLAN}: accum_iter must be a whole number of steps (an int), got {accum!r}")
        if not _close(lr, want.lr):
            if _close(lr, blr * per_gpu / 256):
                problem = "scales blr by one GPU's batch; the rule uses the effective batch (all GPUs, all accumulation steps)"
            elif _close(lr, blr * target):
                problem = "forgets the division by 256: lr = blr x batch / 256"
            elif _close(lr, blr):
                problem = "returns blr unscaled: lr = blr x effective batch / 256"
            else:
                problem = f"expected lr {want.lr:.4g}, got {lr:.4g}"
            raise CheckFailed(f"{_PLAN}: on {case}, {problem}")
    try:
        got = fn(4096, 96, 8, 1.5e-4)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckFailed(
            f"{_PLAN}: 96 x 8 cannot reach 4096 exactly; raise ValueError, not {type(e).__name__}"
        ) from None
    raise CheckFailed(
        f"{_PLAN}: 96 images x 8 GPUs cannot make exactly 4096 (4096 / 768 is not whole); raise ValueError instead of returning {got!r}, or the recipe silently changes"
    )


@exercise(_HOURS, "epochs x images / (per-GPU throughput x GPUs x scaling), in hours")
def check_pretraining_hours(fn) -> None:
    for per_gpu, gpus, epochs, images, scaling in [(106.0, 64, 800, 1_281_167, 1.0), (2000.0, 8, 800, 1_281_167, 0.95),
                                                   (500.0, 1, 100, 9469, 1.0), (3000.0, 64, 1600, 1_281_167, 0.9)]:  # fmt: skip
        case = f"{per_gpu:g} img/s per GPU, {gpus} GPUs, {epochs} epochs of {images} images, scaling {scaling}"
        got = call(_HOURS, fn, per_gpu, gpus, epochs, images, scaling, case=case)
        want = ref_pretraining_hours(per_gpu, gpus, epochs, images, scaling)
        if not isinstance(got, int | float):
            raise CheckFailed(f"{_HOURS} should return a number of hours, got {type(got).__name__}")
        if _close(got, want):
            continue
        mistakes = [(want * 3600, "returns seconds; divide by 3600 for hours"),
                    (want * 60, "returns minutes; hours are seconds / 3600")]  # fmt: skip
        if gpus > 1:
            mistakes.append((want * gpus, "forgets that the GPUs share the work: divide by the number of GPUs"))
        if scaling != 1.0:
            mistakes += [(want * scaling, "ignores the scaling efficiency: together the GPUs go scaling x gpus times as fast as one"),
                         (want * scaling**2, "multiplies by the efficiency; divide by it (a lower efficiency means a longer run)")]  # fmt: skip
        for wrong, problem in mistakes:
            if _close(got, wrong):
                raise CheckFailed(f"{_HOURS}: on {case}, {problem}")
        raise CheckFailed(f"{_HOURS}: on {case}, expected {want:.4g} h, got {got:.4g}")
