"""Lesson 02: choosing which patches the encoder sees.

MAE removes most patches of every image and keeps a small random subset. The trick that
makes this cheap and batchable: give every token a random number ("noise"), sort the
tokens of each sample by it, keep the first ``len_keep``, and remember the permutation
that undoes the sort (``ids_restore``) so the decoder can put every token back in place.

All three sampling strategies of the paper (Figure 6, Table 1f) are written as ways of
making that noise:

* random: uniform noise, so a uniformly random subset is kept (the default, 75% removed);
* block: large random blocks are removed (as in BEiT);
* grid: one patch of every 2x2 cell is kept, on a regular grid.

They all return the same triple ``(x_visible, mask, ids_restore)``.
"""

from __future__ import annotations

import math

import torch
from einops import repeat

from .patches import grid_shape

SAMPLINGS = ("random", "block", "grid")


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """How many of ``num_tokens`` tokens survive masking: ``int(L * (1 - mask_ratio))``."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    len_keep = int(num_tokens * (1 - mask_ratio))
    if len_keep < 1:
        raise ValueError(
            f"mask_ratio {mask_ratio} keeps no token out of {num_tokens}; use a ratio below {1 - 1 / num_tokens:.4f}"
        )
    return len_keep


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens of every sample, shuffled by per-sample noise.

    Args:
        x: (N, L, D) tokens in grid order.
        mask_ratio: fraction of tokens to remove, in [0, 1).
        noise: optional (N, L) scores; the tokens with the *smallest* noise are kept (ties:
            the lower index). Drawn uniformly in [0, 1) when omitted.

    Returns:
        x_visible: (N, len_keep, D) the kept tokens, in order of increasing noise,
            with len_keep = int(L * (1 - mask_ratio)).
        mask: (N, L) 1.0 for removed tokens, 0.0 for kept ones, in the original token order.
        ids_restore: (N, L) the permutation that undoes the shuffle:
            ``shuffled.gather(1, ids_restore)`` is back in grid order.
    """
    if x.ndim != 3:
        raise ValueError(f"random_masking expects tokens of shape (N, L, D), got {tuple(x.shape)}")
    n, length, _ = x.shape
    len_keep = num_kept(length, mask_ratio)
    if noise is None:
        noise = torch.rand(n, length, device=x.device)
    elif noise.shape != (n, length):
        raise ValueError(f"noise must have shape (N, L) = {(n, length)}, got {tuple(noise.shape)}")
    return keep_lowest_noise(x, noise.to(x.device), len_keep)


def keep_lowest_noise(
    x: torch.Tensor, noise: torch.Tensor, len_keep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The heart of :func:`random_masking`: keep the ``len_keep`` tokens of smallest noise.

    Equal noise values are broken by position, the lower index first (a stable sort), so any
    noise, even one with ties, names one mask: the same in PyTorch, in ONNX (whose TopK breaks
    ties the same way) and in the browser explorer. ``len_keep`` may be symbolic, which is how
    the ONNX export (:mod:`mae_course.seeing.onnx_export`) makes the ratio an input of the graph.

    Args:
        x: (N, L, D) tokens in grid order.
        noise: (N, L) scores, smallest kept.
        len_keep: how many tokens to keep, in [1, L].

    Returns:
        the triple of :func:`random_masking`.
    """
    n, length, dim = x.shape
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)  # ascending: smallest noise first = kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # the inverse permutation
    ids_keep = ids_shuffle[:, :len_keep]
    x_visible = torch.gather(x, 1, repeat(ids_keep, "n k -> n k d", d=dim))

    # 0 for the first len_keep positions of the shuffled order, 1 after; then unshuffle.
    mask = torch.ones(n, length, device=x.device)  # float32 even under autocast
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_visible, mask, ids_restore


def _noise_from_keep(keep: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Noise whose smallest values sit exactly on the kept tokens: kept in [0, .5), removed in [.5, 1)."""
    jitter = torch.rand(keep.shape, generator=generator)
    return ((~keep).float() + jitter) / 2


def block_mask_noise(
    batch_size: int,
    grid_size: tuple[int, int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    min_block: int | None = None,
    aspect_range: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """Noise for block-wise masking: removes large random rectangles of patches.

    Rectangles with a random area and aspect ratio are placed at random until exactly
    ``L - len_keep`` patches are covered (the last gaps are filled with single patches
    if no block fits any more).

    Returns:
        (N, L) noise to pass to :func:`random_masking`.
    """
    rows, cols = grid_size
    length = rows * cols
    num_masked = length - num_kept(length, mask_ratio)
    if min_block is None:
        min_block = max(1, length // 12)  # 16 patches on a 14x14 grid, as in BEiT
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=generator).item()

    def randint(hi: int) -> int:  # in [0, hi]
        return int(torch.randint(0, hi + 1, (), generator=generator))

    keeps = []
    for _ in range(batch_size):
        masked = torch.zeros(rows, cols, dtype=torch.bool)
        count = 0
        for _attempt in range(100 * length):
            remaining = num_masked - count
            if remaining <= 0:
                break
            area = uniform(min(min_block, remaining), remaining)
            aspect = math.exp(uniform(log_lo, log_hi))
            h = max(1, round(math.sqrt(area * aspect)))
            w = max(1, round(math.sqrt(area / aspect)))
            if h > rows or w > cols:
                continue
            top, left = randint(rows - h), randint(cols - w)
            block = masked[top : top + h, left : left + w]
            new = int((~block).sum())
            if 0 < new <= remaining:
                block.fill_(True)
                count += new
        if count < num_masked:  # no block fits the last gaps: remove single random patches
            free = (~masked).flatten().nonzero().flatten()
            pick = free[torch.randperm(len(free), generator=generator)[: num_masked - count]]
            masked.view(-1)[pick] = True
        keeps.append(~masked.flatten())
    return _noise_from_keep(torch.stack(keeps), generator)


def grid_mask_noise(
    batch_size: int,
    grid_size: tuple[int, int],
    mask_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise for grid-wise masking: keep one patch of every 2x2 cell, on a regular grid.

    The phase of the grid (which of the four patches of a cell is kept) is drawn per
    sample; the kept patches always form a regular lattice. Only a ratio of 0.75 is
    possible, and both grid sides must be even.

    Returns:
        (N, L) noise to pass to :func:`random_masking`.
    """
    rows, cols = grid_size
    if abs(mask_ratio - 0.75) > 1e-9:
        raise ValueError(f"grid masking keeps one of every four patches: mask_ratio must be 0.75, got {mask_ratio}")
    if rows % 2 or cols % 2:
        raise ValueError(f"grid masking needs an even patch grid, got {rows}x{cols}")
    r = torch.arange(rows).view(rows, 1)
    c = torch.arange(cols).view(1, cols)
    phase = torch.randint(0, 2, (batch_size, 2, 1, 1), generator=generator)
    keep = ((r % 2) == phase[:, 0]) & ((c % 2) == phase[:, 1])  # (N, rows, cols)
    return _noise_from_keep(keep.flatten(1), generator)


def mask_noise(
    sampling: str,
    batch_size: int,
    grid_size: tuple[int, int],
    mask_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(N, L) noise for the named sampling strategy ("random", "block" or "grid")."""
    length = grid_size[0] * grid_size[1]
    if sampling == "random":
        if generator is not None:
            return torch.rand(batch_size, length, generator=generator).to(device)
        return torch.rand(batch_size, length, device=device)
    if sampling == "block":
        return block_mask_noise(batch_size, grid_size, mask_ratio, generator).to(device)
    if sampling == "grid":
        return grid_mask_noise(batch_size, grid_size, mask_ratio, generator).to(device)
    raise ValueError(f"unknown mask sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")


def block_masking(
    x: torch.Tensor,
    mask_ratio: float,
    grid_size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block-wise masking of (N, L, D) tokens; returns the same triple as :func:`random_masking`."""
    grid = grid_shape(x.shape[1], grid_size)
    noise = block_mask_noise(x.shape[0], grid, mask_ratio, generator)
    return random_masking(x, mask_ratio, noise=noise)


def grid_masking(
    x: torch.Tensor,
    mask_ratio: float = 0.75,
    grid_size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid-wise masking of (N, L, D) tokens (keep 1 of 4); same triple as :func:`random_masking`."""
    grid = grid_shape(x.shape[1], grid_size)
    noise = grid_mask_noise(x.shape[0], grid, mask_ratio, generator)
    return random_masking(x, mask_ratio, noise=noise)
