"""Checks for lesson 09: the batch arithmetic of a full-scale run, and each process's share of the data."""

from __future__ import annotations

import math

import torch

from ..experiments.scaling import batch_plan as ref_batch_plan
from ..experiments.scaling import padded
from ..experiments.scaling import rank_indices as ref_rank_indices
from ._core import CheckFailed, call, exercise

_PLAN = "batch_plan"
_SHARE = "rank_indices"


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


@exercise(
    _SHARE, "one shared permutation per epoch, padded, every world_size-th index from the rank: DistributedSampler's"
)
def check_rank_indices(fn) -> None:
    for size, world, epoch, seed in [(10, 3, 0, 0), (16, 4, 1, 0), (5, 8, 2, 7), (100, 6, 3, 1)]:
        case = f"size {size}, world_size {world}, epoch {epoch}, seed {seed}"
        before = torch.random.get_rng_state()
        shares = [_share(fn, size, rank, world, epoch, seed, case) for rank in range(world)]
        if not torch.equal(before, torch.random.get_rng_state()):
            raise CheckFailed(
                f"{_SHARE} changed torch's global random state (torch.manual_seed or a draw without a generator): "
                "that moves every other random draw of the run; draw from torch.Generator().manual_seed(seed + epoch)"
            )
        want = [ref_rank_indices(size, rank, world, epoch, seed) for rank in range(world)]
        if shares == want:
            continue
        lengths = sorted({len(s) for s in shares})
        if len(lengths) > 1:
            raise CheckFailed(
                f"{_SHARE}: on {case}, the shares have {lengths[0]} to {lengths[-1]} indices; every rank needs the "
                f"same number ({len(want[0])}), or one takes a step more and waits forever for the others' gradients: "
                "pad the permutation to a multiple of world_size by repeating its first indices"
            )
        covered = set().union(*shares)
        if len(shares[0]) < len(want[0]) and covered <= set(range(size)):
            missing = size - len(covered)
            raise CheckFailed(
                f"{_SHARE}: on {case}, {missing} image(s) are in no share: pad to a multiple of world_size instead "
                "of dropping the rest (DistributedSampler's drop_last=False)"
            )
        if covered != set(range(size)):
            raise CheckFailed(
                f"{_SHARE}: on {case}, some images are in no share and others in two: every rank must draw the same "
                "permutation, from a generator seeded with seed + epoch and not with the rank"
            )
        per = len(want[0])
        shuffled = padded(torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist(), world)
        if epoch and shares == [ref_rank_indices(size, rank, world, 0, seed) for rank in range(world)]:
            problem = "gives epoch 0's order in every epoch: seed the generator with seed + epoch"
        elif shares == [shuffled[rank * per : (rank + 1) * per] for rank in range(world)]:
            problem = (
                "gives each rank a contiguous block; take every world_size-th index from position rank "
                "(order[rank::world_size]), as DistributedSampler does"
            )
        elif shares == [padded(list(range(size)), world)[rank::world] for rank in range(world)]:
            problem = "does not shuffle: draw torch.randperm(size, generator=...) first"
        else:
            problem = f"expected rank 0's indices {want[0][:8]}{'...' if per > 8 else ''}, got {shares[0][:8]}"
        raise CheckFailed(f"{_SHARE}: on {case}, {problem}")


def _share(fn, size: int, rank: int, world: int, epoch: int, seed: int, case: str) -> list[int]:
    got = call(_SHARE, fn, size, rank, world, epoch, seed, case=case)
    if not isinstance(got, list | tuple) or not all(isinstance(i, int) for i in got):
        raise CheckFailed(f"{_SHARE} should return a list of ints (a tensor's .tolist()), got {type(got).__name__}")
    return list(got)
