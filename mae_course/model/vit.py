"""Lesson 07: the Vision Transformer classifier built from an MAE encoder.

After pretraining, MAE's decoder is discarded and the encoder becomes a standard ViT that sees
*all* patches of an image. This module is that ViT, with the encoder's parameter names
(``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.*``, ``norm``), so the course's
checkpoints and the released MAE files load into it directly, plus a classification head.

Features come from the cls token (after ``norm``) or from the average of the patch tokens
(after a separate ``fc_norm``, as the official fine-tuning code does with ``global_pool``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_weights
from ..errors import CheckpointError
from .encoder import Block, interpolate_pos_embed, sincos_pos_embed
from .patches import PatchEmbed

POOLINGS = ("token", "avg")
# Everything of an MAE checkpoint that the classifier does not use.
PRETRAINING_ONLY = ("decoder_", "mask_token", "encoder_mask_token")


class VisionTransformer(nn.Module):
    """ViT classifier: patch embedding + positions, cls token, blocks, pooled features, head.

    Args:
        img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: as the MAE encoder.
        num_classes: outputs of the head (0: no head, ``forward`` returns the features).
        global_pool: "token" (the cls token after ``norm``) or "avg" (the mean of the patch
            tokens after ``fc_norm``).
        drop_path: stochastic depth rate of the last block; it grows linearly from 0 over depth.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        global_pool: str = "token",
        drop_path: float = 0.0,
    ):
        super().__init__()
        if global_pool not in POOLINGS:
            raise ValueError(f"unknown global_pool {global_pool!r}; choose one of {', '.join(POOLINGS)}")
        self.config = dict(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            global_pool=global_pool,
            drop_path=drop_path,
        )
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Learnable here (as in the official fine-tuning), initialised with the fixed sin-cos table.
        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dim, self.patch_embed.grid_size))
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, rate) for rate in rates])
        if global_pool == "token":
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        else:
            self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @property
    def num_features(self) -> int:
        return self.cls_token.shape[-1]

    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if isinstance(self.head, nn.Linear):  # a small head, as the official fine-tuning (std 2e-5)
            nn.init.trunc_normal_(self.head.weight, std=2e-5)

    def forward_tokens(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalized images -> (N, 1 + L, D): the cls token and every patch token
        after the last block (before any final norm)."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls.to(x.dtype), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalized images -> (N, D) pooled features."""
        x = self.forward_tokens(imgs)
        if self.global_pool == "avg":
            return self.fc_norm(x[:, 1:].mean(dim=1))
        return self.norm(x)[:, 0]

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_classes) logits."""
        return self.head(self.forward_features(imgs))


ENCODER_SETTINGS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio")


def encoder_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder settings of an MAE's or a classifier's config, the ViT's defaults for those it lacks."""
    defaults = {k: p.default for k, p in inspect.signature(VisionTransformer).parameters.items()}
    return {k: config.get(k, defaults[k]) for k in ENCODER_SETTINGS}


def vit_from_mae(mae_config: Mapping[str, Any], num_classes: int, **overrides: Any) -> VisionTransformer:
    """The classifier whose encoder matches an MAE's config (``model.config`` or a checkpoint's)."""
    return VisionTransformer(num_classes=num_classes, **{**encoder_settings(mae_config), **overrides})


def encoder_state_dict(state_dict: Mapping[str, torch.Tensor], vit: VisionTransformer) -> dict[str, torch.Tensor]:
    """The encoder part of an MAE state_dict, fitted to ``vit``: decoder and mask token dropped,
    ``norm`` dropped when ``vit`` pools by average, positional table resized to ``vit``'s grid."""
    encoder = {k: v for k, v in state_dict.items() if not k.startswith(PRETRAINING_ONLY) and not k.startswith("head.")}
    if vit.global_pool == "avg":
        encoder = {k: v for k, v in encoder.items() if not k.startswith("norm.")}
    if "pos_embed" in encoder and encoder["pos_embed"].shape != vit.pos_embed.shape:
        encoder["pos_embed"] = interpolate_pos_embed(encoder["pos_embed"], vit.patch_embed.grid_size)
    return encoder


def load_mae_encoder(vit: VisionTransformer, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Load an MAE checkpoint's encoder into ``vit``. Returns the keys left at their initial
    values, which may only be the head and ``fc_norm``; anything else is an error that names it."""
    encoder = encoder_state_dict(state_dict, vit)
    missing = load_weights(vit, encoder, strict=False)
    unexpected = sorted(set(encoder) - set(vit.state_dict()))
    allowed = [k for k in missing if k.startswith(("head.", "fc_norm."))]
    problems = sorted(set(missing) - set(allowed))
    if problems or unexpected:
        detail = []
        if problems:
            detail.append(f"missing encoder keys: {', '.join(problems[:8])}")
        if unexpected:
            detail.append(f"unexpected keys: {', '.join(unexpected[:8])}")
        raise CheckpointError("the checkpoint is not an MAE encoder for this ViT; " + "; ".join(detail))
    return missing
