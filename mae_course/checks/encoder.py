"""Checks for lesson 03: the 2D sine-cosine positional embedding, attention and the Transformer block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model import encoder as ref
from ._core import CheckFailed, call, exercise, expect_shape, expect_tensor, same


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


@exercise(_POS, "shape, zero cls row, column code first, [sin | cos] layout, frequencies, rectangular grids")
def check_sincos_pos_embed(fn) -> None:
    for dim, grid in [(16, 4), (32, (3, 5)), (8, (2, 3)), (64, 14)]:
        rows, cols = (grid, grid) if isinstance(grid, int) else grid
        case = f"embed_dim={dim}, grid_size={grid}"
        out = expect_tensor(_POS, call(_POS, fn, dim, grid, case=case))
        length = rows * cols
        if tuple(out.shape) == (1, length, dim):
            raise CheckFailed(f"{_POS}: for {case} the table has no cls row; prepend a row of zeros: (1, L + 1, D)")
        expect_shape(_POS, out, (1, length + 1, dim), f"for {case}: (1, L + 1, D) with L = rows * columns")
        if out[0, 0].abs().max() > 0:
            raise CheckFailed(f"{_POS}: row 0 (the cls token's) must be all zeros")
        expected = ref.sincos_pos_embed(dim, grid)
        if same(out, expected):
            continue
        for kwargs, problem in [
            (dict(row_first=True), "the first half encodes the row; the official layout puts the column (x) first"),
            (dict(cos_first=True), "each half is [cos | sin]; the layout is [sin | cos]"),
            (dict(wrong_freq=True), "wrong frequencies: use w_k = 1 / 10000**(k / (D/4)) for k = 0 .. D/4 - 1"),
            (dict(row_first=True, cos_first=True), "the row comes first and each half is [cos | sin]"),
        ]:
            if same(out, _variant(dim, rows, cols, **kwargs)):
                raise CheckFailed(f"{_POS}: {problem} (seen with {case})")
        token = min(cols + 2, length)  # row 1, column 2 on most grids
        raise CheckFailed(
            f"{_POS}: wrong values for {case}. Compare one token: yours[0, {token}] vs "
            f"mae_course.sincos_pos_embed({dim}, {grid})[0, {token}]"
        )


_ATT = "attention"


@exercise(_ATT, "matches scaled_dot_product_attention: scaling by sqrt(d), softmax over the keys, output shape")
def check_attention(fn) -> None:
    g = torch.Generator().manual_seed(0)
    for n, heads, t, d in [(2, 3, 5, 4), (1, 1, 7, 16), (2, 4, 1, 8)]:
        q, k, v = (torch.randn(n, heads, t, d, generator=g) * 2 for _ in range(3))
        case = f"q, k, v of shape {(n, heads, t, d)}"
        out = expect_tensor(_ATT, call(_ATT, fn, q, k, v, case=case))
        expected = F.scaled_dot_product_attention(q, k, v)
        if tuple(out.shape) == (n, heads, t, t):
            raise CheckFailed(
                f"{_ATT} returned the (T, T) attention weights; multiply them with v to get (N, heads, T, d)"
            )
        expect_shape(_ATT, out, (n, heads, t, d), f"for {case}")
        if same(out, expected):
            continue
        scores = q @ k.transpose(-2, -1)
        for wrong, problem in [
            (scores.softmax(-1) @ v, "the scores are not scaled: divide q @ k^T by sqrt(d) before the softmax"),
            ((scores / d).softmax(-1) @ v, "the scores are divided by d; divide by sqrt(d)"),
            (
                (scores / math.sqrt(d)).softmax(-2) @ v,
                "the softmax runs over the queries; normalize over the keys (dim=-1)",
            ),
        ]:
            if same(out, wrong):
                raise CheckFailed(f"{_ATT}: {problem}")
        raise CheckFailed(f"{_ATT}: wrong values for {case}; compute softmax(q @ k.transpose(-2, -1) / sqrt(d)) @ v")


_BLOCK = "TransformerBlock"


def _official_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A block's parameters under the official names: an nn.Sequential MLP's mlp.0 / mlp.2 are mlp.fc1 / mlp.fc2."""
    renamed = {"mlp.0.": "mlp.fc1.", "mlp.2.": "mlp.fc2."}
    return {next((name.replace(a, b, 1) for a, b in renamed.items() if name.startswith(a)), name): value
            for name, value in state.items()}  # fmt: skip


def _block_variants(block: ref.Block, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The classic wrong blocks, computed with the reference's own weights, each with what to tell the learner."""
    n1, attn, n2, fc1, fc2 = block.norm1, block.attn, block.norm2, block.mlp.fc1, block.mlp.fc2

    def mlp(h: torch.Tensor, act=F.gelu) -> torch.Tensor:
        return fc2(act(fc1(h)))

    h = x + attn(n1(x))
    post = n1(x + attn(x))
    return {
        "is post-norm (LayerNorm after each addition, as in the original Transformer); MAE's ViT is pre-norm: "
        "x = x + attn(norm1(x)), then x = x + mlp(norm2(x))": n2(post + mlp(post)),
        "has no residual around the attention: add its output to its input, x = x + attn(norm1(x))": (
            attn(n1(x)) + mlp(n2(attn(n1(x))))
        ),
        "has no residual around the MLP: add its output to its input, x = x + mlp(norm2(x))": mlp(n2(h)),
        "has no residuals at all: each sub-layer's output is added to its input, x = x + sublayer(norm(x))": mlp(
            n2(attn(n1(x)))
        ),
        "runs the attention and the MLP side by side on the same input; the MLP comes after the attention's "
        "residual, on norm2 of its result": x + attn(n1(x)) + mlp(n2(x)),
        "normalizes the MLP's input with norm1; norm2 is a LayerNorm of its own": h + mlp(n1(h)),
        "uses ReLU in the MLP; the ViT's MLP uses GELU (nn.GELU(), the exact one)": h + mlp(n2(h), F.relu),
        "uses the tanh approximation of GELU; the ViT's is the exact nn.GELU()": h
        + mlp(n2(h), lambda t: F.gelu(t, approximate="tanh")),
    }


@exercise(_BLOCK, "pre-norm, both residuals, a GELU MLP of width mlp_ratio x dim, LayerNorm eps 1e-6, official names")
def check_transformer_block(fn) -> None:
    dim, heads = 32, 4
    for ratio in (4.0, 2.0):
        case = f"TransformerBlock({dim}, {heads})" + ("" if ratio == 4.0 else f" with mlp_ratio={ratio}")
        mine = (
            call(_BLOCK, fn, dim, heads, case=case)
            if ratio == 4.0
            else call(_BLOCK, fn, dim, heads, mlp_ratio=ratio, case=case)
        )
        if not isinstance(mine, torch.nn.Module):
            raise CheckFailed(f"{_BLOCK}({dim}, {heads}) should build an nn.Module, but gave {type(mine).__name__}")
        torch.manual_seed(0)
        want = ref.Block(dim, heads, mlp_ratio=ratio).eval()
        with torch.no_grad():
            for name, p in want.named_parameters():
                p.copy_(
                    (1.0 if name.startswith("norm") and name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p)
                )
        hidden = int(dim * ratio)
        theirs = _official_names(mine.state_dict())
        fc1 = theirs.get("mlp.fc1.weight")
        if fc1 is not None and tuple(fc1.shape) != (hidden, dim):
            if ratio != 4.0 and fc1.shape[0] == 4 * dim:
                raise CheckFailed(f"{_BLOCK} ignores mlp_ratio: for {case} the MLP's hidden width must be "
                                  f"int(dim * mlp_ratio) = {hidden}, not {fc1.shape[0]}")  # fmt: skip
            raise CheckFailed(f"{_BLOCK}: for {case} the MLP's hidden layer has {fc1.shape[0]} units; it maps "
                              f"{dim} -> int(dim * mlp_ratio) = {hidden} -> {dim}")  # fmt: skip
        missing = sorted(set(want.state_dict()) - set(theirs))
        unexpected = sorted(set(theirs) - set(want.state_dict()))
        if missing or unexpected:
            raise CheckFailed(
                f"{_BLOCK}: its parameters are not named as in the official checkpoints (missing "
                f"{', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'}). Use norm1, "
                "attn = Attention(dim, num_heads), norm2 and mlp with fc1 and fc2 (or an nn.Sequential(Linear, "
                "GELU, Linear) as mlp)"
            )
        for name, module in mine.named_modules():
            if isinstance(module, torch.nn.LayerNorm) and module.eps != 1e-6:
                raise CheckFailed(f"{_BLOCK}: {name} has eps={module.eps:g}; the ViT's LayerNorms use eps=1e-6 "
                                  "(PyTorch's default is 1e-5)")  # fmt: skip
        names = {official: own for own, official in zip(mine.state_dict(), theirs, strict=True)}
        try:
            mine.load_state_dict({names[k]: v for k, v in want.state_dict().items()})
        except RuntimeError as error:
            raise CheckFailed(
                f"{_BLOCK}: the official weights do not load into it: {' '.join(str(error).split())}"
            ) from None
        mine.eval()
        x = torch.randn(2, 5, dim, generator=torch.Generator().manual_seed(1)) * 2
        with torch.no_grad():
            out = expect_tensor(_BLOCK, call(_BLOCK, mine, x, case=f"{case} called on a (2, 5, {dim}) input"))
            expect_shape(_BLOCK, out, (2, 5, dim), "(N, T, D) in, (N, T, D) out")
            if same(out, want(x)):
                continue
            for problem, wrong in _block_variants(want, x).items():
                if same(out, wrong):
                    raise CheckFailed(f"{_BLOCK} {problem}")
        raise CheckFailed(f"{_BLOCK}: wrong output for {case}; with the same weights it should equal "
                          "mae_course.model.encoder.Block's: x + attn(norm1(x)), then x + mlp(norm2(x))")  # fmt: skip
