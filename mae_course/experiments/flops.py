"""Lesson 08: counting the floating-point operations of an MAE, from its architecture alone.

One multiply-add is 2 FLOPs. A pre-norm Transformer block of width D on T tokens, with MLP
ratio r, costs in its forward pass

    qkv projection       2 * T * D * 3D   =  6 T D^2
    output projection    2 * T * D * D    =  2 T D^2
    MLP                  2 * T * D * rD * 2 = 4r T D^2
    attention            q k^T and (weights) v: 2 * 2 * T^2 * D = 4 T^2 D

i.e. ``(8 + 4r) T D^2 + 4 T^2 D``: 24 T D^2 + 4 T^2 D for r = 4. LayerNorms, the softmax, GELU
and the residual additions are left out (a few percent). A training step costs about three
forward passes (the backward pass computes two matrix products per forward one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.masking import num_kept


def block_flops(tokens: int, dim: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of one Transformer block: (8 + 4r) T D^2 + 4 T^2 D."""
    return (8 + 4 * mlp_ratio) * tokens * dim * dim + 4 * tokens * tokens * dim


@dataclass(frozen=True)
class MaeFlops:
    """Forward FLOPs per image, by part; ``train_step`` is about 3x the forward total."""

    patch_embed: float
    encoder: float
    decoder: float  # decoder_embed + blocks + prediction head

    @property
    def forward(self) -> float:
        return self.patch_embed + self.encoder + self.decoder

    @property
    def train_step(self) -> float:
        return 3 * self.forward


def mae_flops(config: dict[str, Any], mask_ratio: float = 0.75, mask_token_in_encoder: bool | None = None) -> MaeFlops:
    """FLOPs per image of an MAE described by ``config`` (e.g. ``model.config``).

    The encoder runs on the cls token plus the visible patches, or on all of them for the
    mask-token-in-encoder baseline; the decoder always runs on 1 + L tokens.
    """
    p, c = config["patch_size"], config.get("in_chans", 3)
    length = (config["img_size"] // p) ** 2
    dim, dec = config["embed_dim"], config["decoder_embed_dim"]
    ratio = config.get("mlp_ratio", 4.0)
    in_encoder = config.get("mask_token_in_encoder", False) if mask_token_in_encoder is None else mask_token_in_encoder
    seen = 1 + (length if in_encoder else num_kept(length, mask_ratio))
    return MaeFlops(
        patch_embed=2 * length * p * p * c * dim,
        encoder=config["depth"] * block_flops(seen, dim, ratio),
        decoder=2 * seen * dim * dec
        + config["decoder_depth"] * block_flops(1 + length, dec, ratio)
        + 2 * length * dec * p * p * c,
    )
