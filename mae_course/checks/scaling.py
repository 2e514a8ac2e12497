"""Checks for lesson 09: the batch arithmetic of a full-scale run, and each process's share of the data."""

from __future__ import annotations

import math

import torch

from ..experiments.scaling import batch_plan as ref_batch_plan
from ..experiments.scaling import padded
from ..experiments.scaling import rank_indices as ref_rank_indices
from ._core import call, exercise, fail, refused
from ._messages import define, say

MESSAGES = define(
    {
        "batch_plan.checked": "accumulation steps that reach the target batch exactly, the lr scaled by the effective "
        "batch",
        "batch_plan.case": "target {target}, {per_gpu} per GPU, {gpus} GPUs, blr {blr}",
        "batch_plan.two_things": "batch_plan should return (accum_iter, lr), got {got!r}",
        "batch_plan.forgets_gpus": "batch_plan: on {case}, accum_iter {accum} forgets the GPUs: each step sees {per_gpu} "
        "x {gpus} images",
        "batch_plan.wrong_accum": "batch_plan: on {case}, expected accum_iter {expected} (so that {per_gpu} x {gpus} x "
        "accum = {target}), got {accum}",
        "batch_plan.not_int": "batch_plan: accum_iter must be a whole number of steps (an int), got {accum!r}",
        "batch_plan.lr_one_gpu": "scales blr by one GPU's batch; the rule uses the effective batch (all GPUs, all "
        "accumulation steps)",
        "batch_plan.lr_one_step": "scales blr by one step's batch (per GPU x GPUs); the effective batch counts the "
        "accumulation steps too",
        "batch_plan.lr_no_256": "forgets the division by 256: lr = blr x batch / 256",
        "batch_plan.lr_unscaled": "returns blr unscaled: lr = blr x effective batch / 256",
        "batch_plan.lr_wrong": "expected lr {expected:.4g}, got {got:.4g}",
        "batch_plan.lr_problem": "batch_plan: on {case}, {problem}",
        "batch_plan.unreachable_case": "target {target}, {per_gpu} per GPU, {gpus} GPUs",
        "batch_plan.raise_instead": "{per_step} images per step cannot reach {target} exactly: raise ValueError",
        "batch_plan.each_divides": "{per_gpu} and {gpus} each divide {target}, but {per_gpu} x {gpus} GPUs = {per_step} "
        "does not",
        "batch_plan.per_gpu_divides": "{per_gpu} divides {target} but {per_gpu} x {gpus} GPUs = {per_step} does not",
        "batch_plan.cannot_make": "{per_gpu} images x {gpus} GPUs = {per_step} per step cannot make exactly {target}",
        "batch_plan.effective_batch": ", an effective batch of {batch}",
        "batch_plan.not_refused": "batch_plan: {why} ({target} / {per_step} is not whole): test per_gpu_batch x gpus, the "
        "images of one step, and raise ValueError instead of returning {got!r}{runs}, or the "
        "recipe silently changes",
        "rank_indices.checked": "one shared permutation per epoch, padded, every world_size-th index from the rank: "
        "DistributedSampler's",
        "rank_indices.case": "size {size}, world_size {world}, epoch {epoch}, seed {seed}",
        "rank_indices.global_rng": "rank_indices changed torch's global random state (torch.manual_seed or a draw "
        "without a generator): that moves every other random draw of the run; draw from "
        "torch.Generator().manual_seed(seed + epoch)",
        "rank_indices.unequal": "rank_indices: on {case}, the shares have {shortest} to {longest} indices; every rank "
        "needs the same number ({expected}), or one takes a step more and waits forever for the "
        "others' gradients: pad the permutation to a multiple of world_size by repeating its "
        "first indices",
        "rank_indices.dropped": "rank_indices: on {case}, {missing} image(s) are in no share: pad to a multiple of "
        "world_size instead of dropping the rest (DistributedSampler's drop_last=False)",
        "rank_indices.rank_seeded": "rank_indices: on {case}, some images are in no share and others in two: every rank "
        "must draw the same permutation, from a generator seeded with seed + epoch and not "
        "with the rank",
        "rank_indices.same_every_epoch": "gives epoch 0's order in every epoch: seed the generator with seed + epoch",
        "rank_indices.contiguous": "gives each rank a contiguous block; take every world_size-th index from position rank "
        "(order[rank::world_size]), as DistributedSampler does",
        "rank_indices.unshuffled": "does not shuffle: draw torch.randperm(size, generator=...) first",
        "rank_indices.first_difference": "rank {rank}'s indices from position {position}: expected {expected}{more}, got "
        "{got}{more}",
        "rank_indices.problem": "rank_indices: on {case}, {problem}",
        "rank_indices.not_ints": "rank_indices should return a list of ints (a tensor's .tolist()), got {kind}",
    }
)

_PLAN = "batch_plan"
_SHARE = "rank_indices"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


_UNREACHABLE = [  # (target, per GPU, GPUs) that no accumulation reaches exactly
    (4096, 96, 8),  # neither 96 nor 768 divides 4096
    (4096, 64, 3),  # 64 divides 4096, 192 does not: a test of the per-GPU batch alone passes it
    (4096, 128, 64),  # 128 and 64 each divide 4096, 8192 per step does not
]


@exercise(_PLAN)
def check_batch_plan(fn) -> None:
    for target, per_gpu, gpus, blr in [
        (4096, 64, 8, 1.5e-4),
        (4096, 128, 32, 1.5e-4),
        (4096, 256, 1, 1.5e-4),
        (1024, 32, 4, 1e-3),
        (4096, 64, 64, 1.5e-4),
    ]:
        case = say("batch_plan.case", target=target, per_gpu=per_gpu, gpus=gpus, blr=blr)
        got = call(_PLAN, fn, target, per_gpu, gpus, blr, case=case)
        try:
            accum, lr = got
        except (TypeError, ValueError):
            raise fail("batch_plan.two_things", got=got) from None
        want = ref_batch_plan(target, per_gpu, gpus, blr)
        if accum != want.accum_iter:
            if accum == target // per_gpu:
                raise fail("batch_plan.forgets_gpus", case=case, accum=accum, per_gpu=per_gpu, gpus=gpus)
            raise fail(
                "batch_plan.wrong_accum",
                case=case,
                expected=want.accum_iter,
                per_gpu=per_gpu,
                gpus=gpus,
                target=target,
                accum=accum,
            )
        if not isinstance(accum, int):
            raise fail("batch_plan.not_int", accum=accum)
        if not _close(lr, want.lr):
            if _close(lr, blr * per_gpu / 256):
                problem = say("batch_plan.lr_one_gpu")
            elif _close(lr, blr * per_gpu * gpus / 256):
                problem = say("batch_plan.lr_one_step")
            elif _close(lr, blr * target):
                problem = say("batch_plan.lr_no_256")
            elif _close(lr, blr):
                problem = say("batch_plan.lr_unscaled")
            else:
                problem = say("batch_plan.lr_wrong", expected=want.lr, got=lr)
            raise fail("batch_plan.lr_problem", case=case, problem=problem)
    for target, per_gpu, gpus in _UNREACHABLE:
        per_step = per_gpu * gpus
        numbers = dict(target=target, per_gpu=per_gpu, gpus=gpus)
        case = say("batch_plan.unreachable_case", **numbers)
        raised, got = refused(
            _PLAN,
            fn,
            target,
            per_gpu,
            gpus,
            1.5e-4,
            case=case,
            instead=say("batch_plan.raise_instead", per_step=per_step, target=target),
        )
        if raised:
            continue
        if target % per_gpu == 0 and target % gpus == 0:
            why = say("batch_plan.each_divides", per_step=per_step, **numbers)
        elif target % per_gpu == 0:
            why = say("batch_plan.per_gpu_divides", per_step=per_step, **numbers)
        else:
            why = say("batch_plan.cannot_make", per_step=per_step, **numbers)
        accum = got[0] if isinstance(got, tuple | list) and got and isinstance(got[0], int) else None
        wrong_batch = accum is not None and accum * per_step != target
        runs = say("batch_plan.effective_batch", batch=accum * per_step) if wrong_batch else ""
        raise fail("batch_plan.not_refused", why=why, target=target, per_step=per_step, got=got, runs=runs)


@exercise(_SHARE)
def check_rank_indices(fn) -> None:
    for size, world, epoch, seed in [(10, 3, 0, 0), (16, 4, 1, 0), (5, 8, 2, 7), (100, 6, 3, 1)]:
        case = say("rank_indices.case", size=size, world=world, epoch=epoch, seed=seed)
        before = torch.random.get_rng_state()
        shares = [_share(fn, size, rank, world, epoch, seed, case) for rank in range(world)]
        if not torch.equal(before, torch.random.get_rng_state()):
            raise fail("rank_indices.global_rng")
        want = [ref_rank_indices(size, rank, world, epoch, seed) for rank in range(world)]
        if shares == want:
            continue
        lengths = sorted({len(s) for s in shares})
        if len(lengths) > 1:
            raise fail(
                "rank_indices.unequal", case=case, shortest=lengths[0], longest=lengths[-1], expected=len(want[0])
            )
        covered = set().union(*shares)
        if len(shares[0]) < len(want[0]) and covered <= set(range(size)):
            missing = size - len(covered)
            raise fail("rank_indices.dropped", case=case, missing=missing)
        if covered != set(range(size)):
            raise fail("rank_indices.rank_seeded", case=case)
        per = len(want[0])
        shuffled = padded(torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist(), world)
        if epoch and shares == [ref_rank_indices(size, rank, world, 0, seed) for rank in range(world)]:
            problem = say("rank_indices.same_every_epoch")
        elif shares == [shuffled[rank * per : (rank + 1) * per] for rank in range(world)]:
            problem = say("rank_indices.contiguous")
        elif shares == [padded(list(range(size)), world)[rank::world] for rank in range(world)]:
            problem = say("rank_indices.unshuffled")
        else:  # show the first rank, and the first place in its share, that differ
            rank = next(r for r in range(world) if shares[r] != want[r])
            i = next(i for i, (a, b) in enumerate(zip(shares[rank], want[rank], strict=True)) if a != b)
            more = "..." if i + 8 < per else ""
            problem = say(
                "rank_indices.first_difference",
                rank=rank,
                position=i,
                expected=want[rank][i : i + 8],
                got=shares[rank][i : i + 8],
                more=more,
            )
        raise fail("rank_indices.problem", case=case, problem=problem)


def _share(fn, size: int, rank: int, world: int, epoch: int, seed: int, case: str) -> list[int]:
    got = call(_SHARE, fn, size, rank, world, epoch, seed, case=case)
    if not isinstance(got, list | tuple) or not all(isinstance(i, int) for i in got):
        raise fail("rank_indices.not_ints", kind=type(got).__name__)
    return list(got)
