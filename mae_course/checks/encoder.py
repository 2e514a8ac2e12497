"""Checks for lesson 03: the 2D sine-cosine positional embedding, attention and the Transformer block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model import encoder as ref
from ._core import call, exercise, expect_shape, expect_tensor, fail, same
from ._messages import define, say

MESSAGES = define(
    {
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
    }
)


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


_BLOCK = "TransformerBlock"
define(
    {
        "TransformerBlock.checked": "pre-norm, both residuals, a GELU MLP of width mlp_ratio x dim, LayerNorm eps 1e-6, "
        "official names",
        "TransformerBlock.case": "TransformerBlock({dim}, {heads})",
        "TransformerBlock.case_ratio": "TransformerBlock({dim}, {heads}) with mlp_ratio={ratio}",
        "TransformerBlock.not_a_module": "TransformerBlock({dim}, {heads}) should build an nn.Module, but gave {kind}",
        "TransformerBlock.ignores_ratio": "TransformerBlock ignores mlp_ratio: for {case} the MLP's hidden width must be "
        "int(dim * mlp_ratio) = {hidden}, not {got}",
        "TransformerBlock.mlp_width": "TransformerBlock: for {case} the MLP's hidden layer has {got} units; it maps "
        "{dim} -> int(dim * mlp_ratio) = {hidden} -> {dim}",
        "TransformerBlock.names": "TransformerBlock: its parameters are not named as in the official checkpoints "
        "(missing {missing}; unexpected {unexpected}). Use norm1, attn = Attention(dim, "
        "num_heads), norm2 and mlp with fc1 and fc2 (or an nn.Sequential(Linear, GELU, Linear) "
        "as mlp)",
        "TransformerBlock.none": "none",
        "TransformerBlock.eps": "TransformerBlock: {name} has eps={eps}; the ViT's LayerNorms use eps=1e-6 (PyTorch's "
        "default is 1e-5)",
        "TransformerBlock.not_loading": "TransformerBlock: the official weights do not load into it: {error}",
        "TransformerBlock.called": "{case} called on a (2, 5, {dim}) input",
        "TransformerBlock.shape_hint": "(N, T, D) in, (N, T, D) out",
        "TransformerBlock.post_norm": "TransformerBlock is post-norm (LayerNorm after each addition, as in the original "
        "Transformer); MAE's ViT is pre-norm: x = x + attn(norm1(x)), then "
        "x = x + mlp(norm2(x))",
        "TransformerBlock.no_attention_residual": "TransformerBlock has no residual around the attention: add its output "
        "to its input, x = x + attn(norm1(x))",
        "TransformerBlock.no_mlp_residual": "TransformerBlock has no residual around the MLP: add its output to its input, "
        "x = x + mlp(norm2(x))",
        "TransformerBlock.no_residuals": "TransformerBlock has no residuals at all: each sub-layer's output is added to "
        "its input, x = x + sublayer(norm(x))",
        "TransformerBlock.parallel": "TransformerBlock runs the attention and the MLP side by side on the same input; the "
        "MLP comes after the attention's residual, on norm2 of its result",
        "TransformerBlock.norm1_reused": "TransformerBlock normalizes the MLP's input with norm1; norm2 is a LayerNorm of "
        "its own",
        "TransformerBlock.relu": "TransformerBlock uses ReLU in the MLP; the ViT's MLP uses GELU (nn.GELU(), the exact one)",
        "TransformerBlock.tanh_gelu": "TransformerBlock uses the tanh approximation of GELU; the ViT's is the exact "
        "nn.GELU()",
        "TransformerBlock.wrong_output": "TransformerBlock: wrong output for {case}; with the same weights it should equal "
        "mae_course.model.encoder.Block's: x + attn(norm1(x)), then x + mlp(norm2(x))",
    }
)


def _official_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A block's parameters under the official names: an nn.Sequential MLP's mlp.0 / mlp.2 are mlp.fc1 / mlp.fc2."""
    renamed = {"mlp.0.": "mlp.fc1.", "mlp.2.": "mlp.fc2."}
    return {
        next((name.replace(a, b, 1) for a, b in renamed.items() if name.startswith(a)), name): value
        for name, value in state.items()
    }


def _block_variants(block: ref.Block, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The classic wrong blocks, computed with the reference's own weights, by the id of what to tell the learner."""
    n1, attn, n2, fc1, fc2 = block.norm1, block.attn, block.norm2, block.mlp.fc1, block.mlp.fc2

    def mlp(h: torch.Tensor, act=F.gelu) -> torch.Tensor:
        return fc2(act(fc1(h)))

    h = x + attn(n1(x))
    post = n1(x + attn(x))
    return {
        "TransformerBlock.post_norm": n2(post + mlp(post)),
        "TransformerBlock.no_attention_residual": attn(n1(x)) + mlp(n2(attn(n1(x)))),
        "TransformerBlock.no_mlp_residual": mlp(n2(h)),
        "TransformerBlock.no_residuals": mlp(n2(attn(n1(x)))),
        "TransformerBlock.parallel": x + attn(n1(x)) + mlp(n2(x)),
        "TransformerBlock.norm1_reused": h + mlp(n1(h)),
        "TransformerBlock.relu": h + mlp(n2(h), F.relu),
        "TransformerBlock.tanh_gelu": h + mlp(n2(h), lambda t: F.gelu(t, approximate="tanh")),
    }


def _reference_block(dim: int, heads: int, ratio: float) -> ref.Block:
    """The package's block with random weights (LayerNorm weights around 1), so that every mistake shows."""
    torch.manual_seed(0)
    want = ref.Block(dim, heads, mlp_ratio=ratio).eval()
    with torch.no_grad():
        for name, p in want.named_parameters():
            p.copy_((1.0 if name.startswith("norm") and name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
    return want


@exercise(_BLOCK)
def check_transformer_block(fn) -> None:
    dim, heads = 32, 4
    for ratio in (4.0, 2.0):
        if ratio == 4.0:
            case = say("TransformerBlock.case", dim=dim, heads=heads)
            mine = call(_BLOCK, fn, dim, heads, case=case)
        else:
            case = say("TransformerBlock.case_ratio", dim=dim, heads=heads, ratio=ratio)
            mine = call(_BLOCK, fn, dim, heads, mlp_ratio=ratio, case=case)
        if not isinstance(mine, torch.nn.Module):
            raise fail("TransformerBlock.not_a_module", dim=dim, heads=heads, kind=type(mine).__name__)
        want = _reference_block(dim, heads, ratio)
        hidden = int(dim * ratio)
        theirs = _official_names(mine.state_dict())
        fc1 = theirs.get("mlp.fc1.weight")
        if fc1 is not None and tuple(fc1.shape) != (hidden, dim):
            if ratio != 4.0 and fc1.shape[0] == 4 * dim:
                raise fail("TransformerBlock.ignores_ratio", case=case, hidden=hidden, got=fc1.shape[0])
            raise fail("TransformerBlock.mlp_width", case=case, got=fc1.shape[0], dim=dim, hidden=hidden)
        missing = sorted(set(want.state_dict()) - set(theirs))
        unexpected = sorted(set(theirs) - set(want.state_dict()))
        if missing or unexpected:
            none = say("TransformerBlock.none")
            raise fail(
                "TransformerBlock.names", missing=", ".join(missing) or none, unexpected=", ".join(unexpected) or none
            )
        for name, module in mine.named_modules():
            if isinstance(module, torch.nn.LayerNorm) and module.eps != 1e-6:
                raise fail("TransformerBlock.eps", name=name, eps=f"{module.eps:g}")
        names = {official: own for own, official in zip(mine.state_dict(), theirs, strict=True)}
        try:
            mine.load_state_dict({names[k]: v for k, v in want.state_dict().items()})
        except RuntimeError as error:
            raise fail("TransformerBlock.not_loading", error=" ".join(str(error).split())) from None
        mine.eval()
        x = torch.randn(2, 5, dim, generator=torch.Generator().manual_seed(1)) * 2
        with torch.no_grad():
            out = expect_tensor(_BLOCK, call(_BLOCK, mine, x, case=say("TransformerBlock.called", case=case, dim=dim)))
            expect_shape(_BLOCK, out, (2, 5, dim), say("TransformerBlock.shape_hint"))
            if same(out, want(x)):
                continue
            for problem, wrong in _block_variants(want, x).items():
                if same(out, wrong):
                    raise fail(problem)
        raise fail("TransformerBlock.wrong_output", case=case)
