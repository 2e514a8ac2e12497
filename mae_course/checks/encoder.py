"""Checks for lesson 03: the 2D sine-cosine positional embedding and attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model import encoder as ref
from ._core import call, exercise, expect_shape, expect_tensor, fail, same
from ._messages import define, say

MESSAGES = define({
    "sincos_pos_embed.checked": "shape, zero cls row, column code first, [sin | cos] layout, frequencies, "
                                "rectangular grids",
    "sincos_pos_embed.case": "embed_dim={dim}, grid_size={grid}",
    "sincos_pos_embed.no_cls_row": "sincos_pos_embed: for {case} the table has no cls row; prepend a row of zeros: "
                                   "(1, L + 1, D)",
    "sincos_pos_embed.shape_hint": "for {case}: (1, L + 1, D) with L = rows * columns",
    "sincos_pos_embed.cls_not_zero": "sincos_pos_embed: row 0 (the cls token's) must be all zeros",
    "sincos_pos_embed.row_first": "the first half encodes the row; the official layout puts the column (x) first",
    "sincos_pos_embed.cos_first": "each half is [cos | sin]; the layout is [sin | cos]",
    "sincos_pos_embed.frequencies": "wrong frequencies: use w_k = 1 / 10000**(k / (D/4)) for k = 0 .. D/4 - 1",
    "sincos_pos_embed.row_and_cos_first": "the row comes first and each half is [cos | sin]",
    "sincos_pos_embed.mistake": "sincos_pos_embed: {problem} (seen with {case})",
    "sincos_pos_embed.wrong_values": "sincos_pos_embed: wrong values for {case}. Compare one token: "
                                     "yours[0, {token}] vs mae_course.sincos_pos_embed({dim}, {grid})[0, {token}]",
    "attention.checked": "matches scaled_dot_product_attention: scaling by sqrt(d), softmax over the keys, "
                         "output shape",
    "attention.case": "q, k, v of shape {shape}",
    "attention.weights_only": "attention returned the (T, T) attention weights; multiply them with v to get "
                              "(N, heads, T, d)",
    "attention.case_hint": "for {case}",
    "attention.unscaled": "attention: the scores are not scaled: divide q @ k^T by sqrt(d) before the softmax",
    "attention.scaled_by_d": "attention: the scores are divided by d; divide by sqrt(d)",
    "attention.over_queries": "attention: the softmax runs over the queries; normalize over the keys (dim=-1)",
    "attention.wrong_values": "attention: wrong values for {case}; compute softmax(q @ k.transpose(-2, -1) / "
                              "sqrt(d)) @ v",
})  # fmt: skip


def _one_axis(dim: int, pos: torch.Tensor, denominator: float, cos_first: bool) -> torch.Tensor:
    k = torch.arange(dim // 2, dtype=torch.float64)
    angles = pos.double()[:, None] / 10000 ** (k / denominator)
    parts = [angles.cos(), angles.sin()] if cos_first else [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)


def _variant(dim: int, rows: int, cols: int, row_first=False, cos_first=False, wrong_freq=False) -> torch.Tensor:
    """The table with one of the usual mistakes, to recognise it."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    half = dim // 2
    denominator = half if wrong_freq else half / 2  # right: k / (D/4), with D/2 numbers per axis
    col_code = _one_axis(half, c.flatten(), denominator, cos_first)
    row_code = _one_axis(half, r.flatten(), denominator, cos_first)
    emb = torch.cat([row_code, col_code] if row_first else [col_code, row_code], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb]).float().unsqueeze(0)


_POS = "sincos_pos_embed"


@exercise(_POS)
def check_sincos_pos_embed(fn) -> None:
    for dim, grid in [(16, 4), (32, (3, 5)), (8, (2, 3)), (64, 14)]:
        rows, cols = (grid, grid) if isinstance(grid, int) else grid
        case = say("sincos_pos_embed.case", dim=dim, grid=grid)
        out = expect_tensor(_POS, call(_POS, fn, dim, grid, case=case))
        length = rows * cols
        if tuple(out.shape) == (1, length, dim):
            raise fail("sincos_pos_embed.no_cls_row", case=case)
        expect_shape(_POS, out, (1, length + 1, dim), say("sincos_pos_embed.shape_hint", case=case))
        if out[0, 0].abs().max() > 0:
            raise fail("sincos_pos_embed.cls_not_zero")
        expected = ref.sincos_pos_embed(dim, grid)
        if same(out, expected):
            continue
        for kwargs, problem in [
            (dict(row_first=True), "sincos_pos_embed.row_first"),
            (dict(cos_first=True), "sincos_pos_embed.cos_first"),
            (dict(wrong_freq=True), "sincos_pos_embed.frequencies"),
            (dict(row_first=True, cos_first=True), "sincos_pos_embed.row_and_cos_first"),
        ]:
            if same(out, _variant(dim, rows, cols, **kwargs)):
                raise fail("sincos_pos_embed.mistake", problem=say(problem), case=case)
        token = min(cols + 2, length)  # row 1, column 2 on most grids
        raise fail("sincos_pos_embed.wrong_values", case=case, token=token, dim=dim, grid=grid)


_ATT = "attention"


@exercise(_ATT)
def check_attention(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, heads, t, d in [(2, 3, 5, 4), (1, 1, 7, 16), (2, 4, 1, 8)]:
        q, k, v = (torch.randn(n, heads, t, d, generator=g) * 2 for _ in range(3))
        case = say("attention.case", shape=(n, heads, t, d))
        out = expect_tensor(_ATT, call(_ATT, fn, q, k, v, case=case))
        expected = F.scaled_dot_product_attention(q, k, v)
        if tuple(out.shape) == (n, heads, t, t):
            raise fail("attention.weights_only")
        expect_shape(_ATT, out, (n, heads, t, d), say("attention.case_hint", case=case))
        if same(out, expected):
            continue
        scores = q @ k.transpose(-2, -1)
        for wrong, problem in [
            (scores.softmax(-1) @ v, "attention.unscaled"),
            ((scores / d).softmax(-1) @ v, "attention.scaled_by_d"),
            ((scores / math.sqrt(d)).softmax(-2) @ v, "attention.over_queries"),
        ]:
            if same(out, wrong):
                raise fail(problem)
        raise fail("attention.wrong_values", case=case)
