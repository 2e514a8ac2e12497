"""Checks for lesson 09: the batch arithmetic of a full-scale run, and each process's share of the data."""

from __future__ import annotations

import math

import torch

from ..experiments.scaling import batch_plan as ref_batch_plan
from ..experiments.scaling import padded
from ..experiments.scaling import rank_indices as ref_rank_indices
from ._core import CheckFailed, call, exercise, refused

_PLAN = "batch_plan"
_SHARE = "rank_indices"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


_UNREACHABLE = [  # (target, per GPU, GPUs) that no accumulation reaches exactly
    (4096, 96, 8),  # neither 96 nor 768 divides 4096
    (4096, 64, 3),  # 64 divides 4096, 192 does not: a test of the per-GPU batch alone passes it
    (4096, 128, 64),  # 128 and 64 each divide 4096, 8192 per step does not
]


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
            elif _close(lr, blr * per_gpu * gpus / 256):
                problem = "scales blr by one step's batch (per GPU x GPUs); the effective batch counts the accumulation steps too"
            elif _close(lr, blr * target):
                problem = "forgets the division by 256: lr = blr x batch / 256"
            elif _close(lr, blr):
                problem = "returns blr unscaled: lr = blr x effective batch / 256"
            else:
                problem = f"expected lr {want.lr:.4g}, got {lr:.4g}"
            raise CheckFailed(f"{_PLAN}: on {case}, {problem}")
    for target, per_gpu, gpus in _UNREACHABLE:
        per_step = per_gpu * gpus
        case = f"target {target}, {per_gpu} per GPU, {gpus} GPUs"
        raised, got = refused(_PLAN, fn, target, per_gpu, gpus, 1.5e-4, case=case,
                              instead=f"{per_step} images per step cannot reach {target} exactly: raise ValueError")  # fmt: skip
        if raised:
            continue
        if target % per_gpu == 0 and target % gpus == 0:
            why = f"{per_gpu} and {gpus} each divide {target}, but {per_gpu} x {gpus} GPUs = {per_step} does not"
        elif target % per_gpu == 0:
            why = f"{per_gpu} divides {target} but {per_gpu} x {gpus} GPUs = {per_step} does not"
        else:
            why = f"{per_gpu} images x {gpus} GPUs = {per_step} per step cannot make exactly {target}"
        accum = got[0] if isinstance(got, tuple | list) and got and isinstance(got[0], int) else None
        runs = f", an effective batch of {accum * per_step}" if accum is not None and accum * per_step != target else ""
        raise CheckFailed(
            f"{_PLAN}: {why} ({target} / {per_step} is not whole): test per_gpu_batch x gpus, the images of one step, "
            f"and raise ValueError instead of returning {got!r}{runs}, or the recipe silently changes"
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
        else:  # show the first rank, and the first place in its share, that differ
            rank = next(r for r in range(world) if shares[r] != want[r])
            i = next(i for i, (a, b) in enumerate(zip(shares[rank], want[rank], strict=True)) if a != b)
            more = "..." if i + 8 < per else ""
            problem = (
                f"rank {rank}'s indices from position {i}: expected {want[rank][i : i + 8]}{more}, "
                f"got {shares[rank][i : i + 8]}{more}"
            )
        raise CheckFailed(f"{_SHARE}: on {case}, {problem}")


def _share(fn, size: int, rank: int, world: int, epoch: int, seed: int, case: str) -> list[int]:
    got = call(_SHARE, fn, size, rank, world, epoch, seed, case=case)
    if not isinstance(got, list | tuple) or not all(isinstance(i, int) for i in got):
        raise CheckFailed(f"{_SHARE} should return a list of ints (a tensor's .tolist()), got {type(got).__name__}")
    return list(got)
