"""Checks for lesson 04's capstone: the encoder's and the decoder's forward pass, from the model's parts.

The learner's ``forward_encoder(model, imgs, mask_ratio, noise)`` and ``forward_decoder(model,
latent, ids_restore)`` are compared with :class:`mae_course.model.mae.MaskedAutoencoder`'s own
methods on a small model whose positional tables, cls token and mask token are random: the
fixed sin-cos tables have a zero cls row, and equal encoder and decoder widths would hide a
borrowed table, so the check makes every such mistake change the result.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ..model.decoder import unshuffle_with_mask_tokens
from ..model.mae import MaskedAutoencoder
from ..model.masking import random_masking
from ..model.registry import build_model
from ._core import call, exercise, expect_shape, expect_tensor, fail, same
from ._messages import define, say

_ENCODER = "forward_encoder"
_DECODER = "forward_decoder"

MESSAGES = define(
    {
        "forward_encoder.checked": "positions before masking, the cls token with its own position in front, blocks, norm",
        "forward_encoder.positions_after_masking": "forward_encoder adds the positions after masking: the kept tokens are "
        "in shuffled order, so token j is no longer patch j; add "
        "pos_embed[:, 1:] to all L tokens, then mask",
        "forward_encoder.cls_without_position": "forward_encoder gives the cls token no position: add the table's first "
        "row, pos_embed[:, :1], to it (zero in the fixed sin-cos table, not in a "
        "learned one; the check uses random tables)",
        "forward_encoder.cls_last": "forward_encoder puts the cls token after the patches; it goes first, at index 0",
        "forward_encoder.no_norm": "forward_encoder leaves out the final LayerNorm, model.norm",
        "forward_encoder.case": "3 images, 75% masking",
        "forward_encoder.three_things": "forward_encoder should return (latent, mask, ids_restore), got {kind}",
        "forward_encoder.shape_hint": "the cls token plus the 16 visible tokens, (N, 1 + K, D)",
        "forward_encoder.own_masking": "forward_encoder: mask or ids_restore differ from what random_masking gives for "
        "the noise passed in; mask with the given noise and return its mask and ids_restore",
        "forward_encoder.wrong": "forward_encoder: wrong latent; the order is patch_embed, + pos_embed[:, 1:], "
        "random_masking, the cls token (+ pos_embed[:, :1]) in front, the blocks, model.norm",
        "forward_decoder.checked": "embed, mask tokens unshuffled behind the cls token, the decoder's own positions, "
        "blocks, norm, head",
        "forward_decoder.encoder_table": "forward_decoder adds the encoder's positional table, model.pos_embed; the "
        "decoder has its own, model.decoder_pos_embed, of the decoder's width",
        "forward_decoder.no_positions": "forward_decoder adds no positions in the decoder: every mask token is the same "
        "vector, so without decoder_pos_embed it cannot tell which patch to predict",
        "forward_decoder.cls_left_out": "forward_decoder leaves the cls token out of the decoder; keep x[:, :1] in front "
        "of the L unshuffled tokens, add the decoder's whole table, and drop the cls "
        "prediction only at the end",
        "forward_decoder.no_norm": "forward_decoder leaves out the decoder's LayerNorm, model.decoder_norm",
        "forward_decoder.case": "encoder width 32, decoder width {width}",
        "forward_decoder.cls_kept": "forward_decoder: one prediction too many; drop the cls token's, pred[:, 1:]",
        "forward_decoder.shape_hint": "one prediction of p*p*C values per patch, (N, L, p*p*C)",
        "forward_decoder.wrong": "forward_decoder: wrong prediction on {case}; the order is decoder_embed, the mask tokens "
        "unshuffled behind the cls token, + decoder_pos_embed, the decoder blocks, decoder_norm, "
        "decoder_pred, drop the cls",
    }
)


def _judge(
    got: torch.Tensor,
    want: torch.Tensor,
    variants: Callable[[], dict[str, torch.Tensor]],
    otherwise: str,
    **fields: object,
) -> None:
    """Pass if ``got`` is ``want``; else fail naming the classic mistake it equals (a message id), or with ``otherwise``."""
    if same(got, want):
        return
    for problem, wrong in variants().items():
        if same(got, wrong):
            raise fail(problem)
    raise fail(otherwise, **fields)


def _test_model(decoder_width: int = 32) -> MaskedAutoencoder:
    """A 2-block mini MAE with random tables and tokens, so that every part shows in the result."""
    torch.manual_seed(0)
    model = build_model(
        "mae_vit_mini_patch4_32",
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=decoder_width,
        decoder_depth=1,
        decoder_num_heads=2,
    ).eval()
    with torch.no_grad():
        for table in (model.pos_embed, model.decoder_pos_embed, model.cls_token, model.mask_token):
            table.normal_()
    return model


def _inputs(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.rand(n, 64, generator=g)


def _blocks(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = block(x)
    return x


def _encoder_variants(model: nn.Module, imgs: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """The classic wrong encoders, each with what to tell the learner."""
    tokens = model.patch_embed(imgs)
    n = imgs.shape[0]
    cls = (model.cls_token + model.pos_embed[:, :1]).expand(n, -1, -1)
    visible, _, _ = random_masking(tokens + model.pos_embed[:, 1:], 0.75, noise)
    late, _, _ = random_masking(tokens, 0.75, noise)
    late = late + model.pos_embed[:, 1 : 1 + late.shape[1]]
    return {
        "forward_encoder.positions_after_masking": model.norm(_blocks(model.blocks, torch.cat([cls, late], 1))),
        "forward_encoder.cls_without_position": model.norm(
            _blocks(model.blocks, torch.cat([model.cls_token.expand(n, -1, -1), visible], 1))
        ),
        "forward_encoder.cls_last": model.norm(_blocks(model.blocks, torch.cat([visible, cls], 1))),
        "forward_encoder.no_norm": _blocks(model.blocks, torch.cat([cls, visible], 1)),
    }


@exercise(_ENCODER)
def check_forward_encoder(fn: Callable) -> None:
    model = _test_model()
    imgs, noise = _inputs()
    with torch.no_grad():
        got = call(_ENCODER, fn, model, imgs.clone(), 0.75, noise.clone(), case=say("forward_encoder.case"))
        if not isinstance(got, tuple) or len(got) != 3:
            raise fail("forward_encoder.three_things", kind=type(got).__name__)
        latent, mask, ids_restore = (expect_tensor(_ENCODER, t) for t in got)
        want_latent, want_mask, want_restore = model.forward_encoder(imgs, 0.75, noise)
        expect_shape(_ENCODER, latent, tuple(want_latent.shape), say("forward_encoder.shape_hint"))
        if not (torch.equal(mask, want_mask) and torch.equal(ids_restore, want_restore)):
            raise fail("forward_encoder.own_masking")
        _judge(latent, want_latent, partial(_encoder_variants, model, imgs, noise), "forward_encoder.wrong")


def _decoder_variants(model: nn.Module, latent: torch.Tensor, ids_restore: torch.Tensor) -> dict[str, torch.Tensor]:
    x = model.decoder_embed(latent)
    patches = unshuffle_with_mask_tokens(x[:, 1:], model.mask_token, ids_restore)
    full = torch.cat([x[:, :1], patches], 1)
    head = model.decoder_pred
    variants = {}
    if model.pos_embed.shape == model.decoder_pos_embed.shape:  # otherwise borrowing it fails loudly anyway
        variants["forward_decoder.encoder_table"] = head(
            model.decoder_norm(_blocks(model.decoder_blocks, full + model.pos_embed))
        )[:, 1:]
    return variants | {
        "forward_decoder.no_positions": head(model.decoder_norm(_blocks(model.decoder_blocks, full)))[:, 1:],
        "forward_decoder.cls_left_out": head(
            model.decoder_norm(_blocks(model.decoder_blocks, patches + model.decoder_pos_embed[:, 1:]))
        ),
        "forward_decoder.no_norm": head(_blocks(model.decoder_blocks, full + model.decoder_pos_embed))[:, 1:],
    }


@exercise(_DECODER)
def check_forward_decoder(fn: Callable) -> None:
    # Equal widths: a decoder that borrows the encoder's table runs, and the check can say so.
    for width in (32, 24):
        model = _test_model(decoder_width=width)
        imgs, noise = _inputs()
        case = say("forward_decoder.case", width=width)
        with torch.no_grad():
            latent, _, ids_restore = model.forward_encoder(imgs, 0.75, noise)
            pred = expect_tensor(_DECODER, call(_DECODER, fn, model, latent.clone(), ids_restore.clone(), case=case))
            want = model.forward_decoder(latent, ids_restore)
            if pred.shape == (3, 65, want.shape[-1]):
                raise fail("forward_decoder.cls_kept")
            expect_shape(_DECODER, pred, tuple(want.shape), say("forward_decoder.shape_hint"))
            _judge(
                pred, want, partial(_decoder_variants, model, latent, ids_restore), "forward_decoder.wrong", case=case
            )
