"""Checks for lesson 01: patchify and unpatchify."""

from __future__ import annotations

import itertools

import torch
from einops import rearrange

from ..model import patches as ref
from ._core import call, exercise, expect_shape, expect_tensor, fail, refused
from ._messages import define, say

MESSAGES = define(
    {
        "patchify.checked": "shapes, the (row, column, channel) order, non-square and one-channel images, bad sizes",
        "unpatchify.checked": "the exact inverse of patchify, square and non-square grids, one channel",
        "patches.row": "row",
        "patches.column": "column",
        "patches.channel": "channel",
        "patches.axis_separator": ", ",
        "patches.vector_order": "patch vectors are ordered ({named}); expected (row, column, channel)",
        "patches.column_major": "tokens run down the columns first (column-major); expected row-major: left to right, "
        "then top to bottom",
        "patches.problem_separator": "; ",
        "patches.tiny_example": "patchify(torch.arange(32.).reshape(1, 2, 4, 4), 2)[0, {token}] should be {expected}",
        "patches.plain_reshape": "a plain reshape cuts the image's memory into runs of p*p*C numbers, and such a run is "
        "not a patch (it is a piece of one pixel row). Split H into (H/p, p) and W into (W/p, p), "
        "bring the two p axes together, then flatten: einops.rearrange does it in one line",
        "patchify.case": "images of shape {shape} with patch_size={p}",
        "patchify.in_place": "patchify changed its input images in place; work on a copy (or use rearrange/reshape)",
        "patchify.transposed": "patchify: for {case} you returned (N, p*p*C, L) = {got}; tokens go on axis 1: expected "
        "(N, L, p*p*C) = {expected}",
        "patchify.shape_hint": "for {case}: L = (H/p)*(W/p) tokens of p*p*C numbers each",
        "patchify.wrong_order": "patchify: {problem}. To see it: {example}",
        "patchify.reshaped": "patchify: {reshape}. To see it: {example}",
        "patchify.wrong_values": "patchify: wrong values for {case}. To see it: {example}",
        "patchify.ten_by_eight": "a 10x8 image",
        "patchify.eight_by_ten": "an 8x10 image",
        "patchify.bad_size_case": "{image} with patch_size=4",
        "patchify.raise_value_error": "raise a ValueError that says the size is not divisible by the patch size",
        "patchify.no_error": "patchify: {image} cannot be cut into 4x4 patches, but no error was raised; raise a "
        "ValueError when H or W is not divisible by patch_size",
        "unpatchify.case": "patches of images {shape} with patch_size={p}",
        "unpatchify.case_grid": "patches of images {shape} with patch_size={p} and grid_size={grid}",
        "unpatchify.sides_swapped": "unpatchify: for {case} you returned {w}x{h} images; grid_size is (rows, columns)",
        "unpatchify.shape_hint": "for {case}: images are (N, C, H, W), C = p*p*C / (p*p)",
        "unpatchify.wrong_order": "unpatchify reads the patches in the wrong order: it assumes {problem}. Use the same "
        "pattern as patchify, with the two sides of the arrow swapped",
        "unpatchify.reshaped": "unpatchify: a plain reshape of the patches does not rebuild the image: {reshape}, in "
        "reverse",
        "unpatchify.not_inverse": "unpatchify: unpatchify(patchify(imgs, {p}), ...) does not give imgs back for {case}",
    }
)

_AXIS_NAMES = {"p": "patches.row", "q": "patches.column", "c": "patches.channel"}
_VECTOR_ORDERS = ["".join(order) for order in itertools.permutations("pqc")]  # "pqc" is right
_TOKEN_ORDERS = {"h w": "row-major", "w h": "column-major"}  # "h w" is right


def _counting_images(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """Images whose pixel values count up, so any reordering shows."""
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)


def _patchify_variant(imgs: torch.Tensor, p: int, tokens: str, vector: str) -> torch.Tensor:
    spaced = " ".join(vector)
    return rearrange(imgs, f"n c (h p) (w q) -> n ({tokens}) ({spaced})", p=p, q=p)


def _unpatchify_variant(x: torch.Tensor, p: int, grid: tuple[int, int], tokens: str, vector: str) -> torch.Tensor:
    spaced = " ".join(vector)
    return rearrange(x, f"n ({tokens}) ({spaced}) -> n c (h p) (w q)", h=grid[0], w=grid[1], p=p, q=p)


def _describe(tokens: str, vector: str) -> str:
    problems = []
    if vector != "pqc":
        named = say("patches.axis_separator").join(say(_AXIS_NAMES[a]) for a in vector)
        problems.append(say("patches.vector_order", named=named))
    if tokens != "h w":
        problems.append(say("patches.column_major"))
    return say("patches.problem_separator").join(problems)


def _tiny_example(token: int = 0) -> str:
    """What a token of a small counting image should hold (token 1 tells row-major from column-major:
    token 0 is the same patch either way)."""
    imgs = _counting_images(1, 2, 4, 4)
    expected = ref.patchify(imgs, 2)[0, token].int().tolist()
    return say("patches.tiny_example", token=token, expected=expected)


def _plain_reshape(imgs: torch.Tensor, p: int) -> list[torch.Tensor]:
    """What reshaping without moving axes gives, from channels-first and channels-last images."""
    n, c, h, w = imgs.shape
    shape = (n, (h // p) * (w // p), p * p * c)
    return [imgs.reshape(shape), imgs.permute(0, 2, 3, 1).reshape(shape)]


_CASES = [((2, 3, 8, 8), 4), ((1, 3, 8, 12), 4), ((2, 1, 6, 6), 3), ((1, 3, 4, 4), 4), ((1, 3, 8, 8), 1)]


@exercise("patchify")
def check_patchify(fn) -> None:
    name = "patchify"
    for shape, p in _CASES:
        imgs = _counting_images(*shape)
        original = imgs.clone()
        case = say("patchify.case", shape=shape, p=p)
        out = expect_tensor(name, call(name, fn, imgs, p, case=case))
        if not torch.equal(imgs, original):
            raise fail("patchify.in_place")
        n, c, h, w = shape
        expected_shape = (n, (h // p) * (w // p), p * p * c)
        if tuple(out.shape) == (n, p * p * c, (h // p) * (w // p)) and expected_shape != tuple(out.shape):
            raise fail("patchify.transposed", case=case, got=tuple(out.shape), expected=expected_shape)
        expect_shape(name, out, expected_shape, say("patchify.shape_hint", case=case))
        if torch.equal(out, ref.patchify(imgs, p)):
            continue
        for tokens, vector in itertools.product(_TOKEN_ORDERS, _VECTOR_ORDERS):
            if torch.equal(out, _patchify_variant(imgs, p, tokens, vector)):
                token = 1 if tokens != "h w" and vector == "pqc" else 0
                raise fail("patchify.wrong_order", problem=_describe(tokens, vector), example=_tiny_example(token))
        if any(torch.equal(out, plain) for plain in _plain_reshape(imgs, p)):
            raise fail("patchify.reshaped", reshape=say("patches.plain_reshape"), example=_tiny_example())
        raise fail("patchify.wrong_values", case=case, example=_tiny_example())

    # testing one side alone misses the other
    for image, h, w in [("patchify.ten_by_eight", 10, 8), ("patchify.eight_by_ten", 8, 10)]:
        image = say(image)
        raised, _ = refused(
            name,
            fn,
            torch.zeros(1, 3, h, w),
            4,
            case=say("patchify.bad_size_case", image=image),
            instead=say("patchify.raise_value_error"),
        )
        if not raised:
            raise fail("patchify.no_error", image=image)


@exercise("unpatchify")
def check_unpatchify(fn) -> None:
    name = "unpatchify"
    for shape, p in _CASES:
        imgs = _counting_images(*shape)
        n, c, h, w = shape
        grid = (h // p, w // p)
        x = ref.patchify(imgs, p)
        square = grid[0] == grid[1]
        case = (
            say("unpatchify.case", shape=shape, p=p)
            if square
            else say("unpatchify.case_grid", shape=shape, p=p, grid=grid)
        )
        out = call(name, fn, x, p, case=case) if square else call(name, fn, x, p, grid, case=case)
        out = expect_tensor(name, out)
        if tuple(out.shape) != shape and square is False and tuple(out.shape[-2:]) == (w, h):
            raise fail("unpatchify.sides_swapped", case=case, w=w, h=h)
        expect_shape(name, out, shape, say("unpatchify.shape_hint", case=case))
        if torch.equal(out, imgs):
            continue
        for tokens, vector in itertools.product(_TOKEN_ORDERS, _VECTOR_ORDERS):
            if torch.equal(out, _unpatchify_variant(x, p, grid, tokens, vector)):
                raise fail("unpatchify.wrong_order", problem=_describe(tokens, vector))
        if torch.equal(out, x.reshape(out.shape)):
            raise fail("unpatchify.reshaped", reshape=say("patches.plain_reshape"))
        raise fail("unpatchify.not_inverse", p=p, case=case)
