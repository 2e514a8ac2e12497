"""Lessons 03-04 put together: the Masked Autoencoder, an asymmetric ViT encoder-decoder trained to fill
in removed patches.

    image ─ patchify ─ embed + pos ─ keep 25% ─ [cls] + visible ─ encoder ─┐
                                                                            │
    loss on removed patches ─ pred ─ decoder ─ + pos ─ unshuffle ─ + mask tokens

The encoder never sees mask tokens: it runs on the visible quarter of the patches only,
which is what makes MAE pretraining cheap. A small decoder gets the encoded visible
tokens plus one shared, learned mask token per removed patch, puts them back in grid
order, and predicts the pixels of every patch. The loss counts the removed ones only.

Parameter names follow the official implementation exactly, so its released
``{'model': state_dict}`` files load with ``strict=True``.

Under mixed precision (autocast), the matrix products run in 16 bits but the residual stream of
both the encoder and the decoder stays in float32, as in the official code: there the fixed
positional tables (float32) are added to the 16-bit projections, which promotes the sum, and
every block adds its 16-bit output back onto that float32 stream. A bf16 residual stream would
save a little memory traffic, but it rounds every block's sum to 8 significant bits; we keep the
official choice (``tests/test_speed.py`` checks the dtypes).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .decoder import masked_mse_loss, norm_pix_target, unshuffle_with_mask_tokens
from .encoder import Block, sincos_pos_embed
from .masking import SAMPLINGS, mask_noise, random_masking
from .patches import PatchEmbed, patchify


class MaskedAutoencoder(nn.Module):
    """MAE with a ViT encoder and a lightweight ViT decoder.

    Args:
        img_size, patch_size, in_chans: the input images (square) and patch side p.
        embed_dim, depth, num_heads: the encoder ViT.
        decoder_embed_dim, decoder_depth, decoder_num_heads: the decoder (paper: 512, 8, 16).
        mlp_ratio: MLP hidden width / model width in every block.
        norm_pix_loss: predict per-patch normalized pixels (paper: better representations).
        mask_token_in_encoder: the "encoder w/ [M]" baseline of Table 1c / Table 2: the
            encoder runs on all tokens with a learned mask token in the removed places,
            and the decoder receives them all. Slower and worse; for comparison only.
        mask_sampling: "random" (the paper's default), "block" or "grid".
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
        mask_token_in_encoder: bool = False,
        mask_sampling: str = "random",
    ):
        super().__init__()
        if mask_sampling not in SAMPLINGS:
            raise ValueError(f"unknown mask_sampling {mask_sampling!r}; choose one of {', '.join(SAMPLINGS)}")
        self.config = dict(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
            norm_pix_loss=norm_pix_loss,
            mask_token_in_encoder=mask_token_in_encoder,
            mask_sampling=mask_sampling,
        )
        self.norm_pix_loss = norm_pix_loss
        self.mask_token_in_encoder = mask_token_in_encoder
        self.mask_sampling = mask_sampling
        self.grad_checkpointing = False  # a training setting, not part of the architecture: see set_grad_checkpointing

        # --- encoder ---
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        if mask_token_in_encoder:
            self.encoder_mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        # --- decoder ---
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        if not mask_token_in_encoder:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)

        self.initialize_weights()

    # ------------------------------------------------------------------ set-up
    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def initialize_weights(self) -> None:
        """The official initialization: fixed sin-cos tables, xavier_uniform Linear weights
        (and the patch projection viewed as a matrix), zero biases, LayerNorm 1/0, and
        normal(std=0.02) tokens. The patch projection's bias keeps PyTorch's default."""
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed(self.pos_embed.shape[-1], self.grid_size))
            self.decoder_pos_embed.copy_(sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.grid_size))
            w = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.encoder_mask_token if self.mask_token_in_encoder else self.mask_token, std=0.02)
        self.apply(_init_linear_and_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every Transformer block, encoder and decoder.

        A checkpointed block keeps only its input for the backward pass and recomputes its
        inner activations (attention, the 4x-wide MLP) there: much less memory, for about one
        more forward pass of compute. It is what lets ViT-H or large batches fit on a GPU.
        The loss and the gradients are the same. A setting of this module, not a parameter:
        the state_dict and the checkpoints do not change.
        """
        self.grad_checkpointing = enable

    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, D) through each block in turn, checkpointed when training with gradient checkpointing."""
        for block in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    # ------------------------------------------------------------------ stages
    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches.

        Args:
            imgs: (N, C, H, W) normalized images.
            mask_ratio: fraction of patches to remove.
            noise: optional (N, L) masking noise (smallest = kept); drawn by the model's
                sampling strategy when omitted.

        Returns:
            latent: (N, 1 + K, D) the encoded cls token and K = int(L * (1 - ratio)) visible
                tokens (in the shuffled order), or (N, 1 + L, D) in grid order for the
                mask-token-in-encoder baseline.
            mask: (N, L) 1 = removed, 0 = visible.
            ids_restore: (N, L) the permutation that restores grid order.
        """
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]  # (N, L, D)
        if noise is None:
            noise = mask_noise(self.mask_sampling, x.shape[0], self.grid_size, mask_ratio, device=x.device)
        x_visible, mask, ids_restore = random_masking(x, mask_ratio, noise)
        return self.encode(x, x_visible, mask), mask, ids_restore

    def encode(self, x: torch.Tensor, x_visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The encoder proper, after masking: the cls token and the visible tokens through the blocks.

        Args:
            x: (N, L, D) every embedded token with its position, in grid order (used only by the
                mask-token-in-encoder baseline).
            x_visible, mask: (N, K, D) and (N, L) from masking.

        Returns:
            latent: (N, 1 + K, D), or (N, 1 + L, D) for the baseline (see :meth:`forward_encoder`).
        """
        if self.mask_token_in_encoder:
            mask_tokens = (self.encoder_mask_token + self.pos_embed[:, 1:]).to(x.dtype)
            x = torch.where(mask.unsqueeze(-1).bool(), mask_tokens, x)  # (N, L, D), grid order
        else:
            x = x_visible  # (N, K, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls.to(x.dtype), x], dim=1)
        x = self._run_blocks(self.blocks, x)
        return self.norm(x)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every patch from the encoded tokens.

        Args:
            latent: (N, 1 + K, D) from :meth:`forward_encoder`.
            ids_restore: (N, L) from :meth:`forward_encoder`.

        Returns:
            pred: (N, L, p*p*C) predicted pixel values per patch, in patchify order.
        """
        x = self.decoder_embed(latent)  # (N, 1 + K, D_dec)
        if not self.mask_token_in_encoder:
            patches = unshuffle_with_mask_tokens(x[:, 1:], self.mask_token, ids_restore)
            x = torch.cat([x[:, :1], patches], dim=1)  # (N, 1 + L, D_dec)
        x = x + self.decoder_pos_embed  # float32 table: under autocast the residual stream stays float32, as officially
        x = self._run_blocks(self.decoder_blocks, x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x)[:, 1:]  # drop the cls token

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE between ``pred`` (N, L, p*p*C) and the (normalized) pixels, on removed patches only."""
        target = patchify(imgs, self.patch_size)
        if self.norm_pix_loss:
            target = norm_pix_target(target)
        return masked_mse_loss(pred, target, mask)

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(loss, pred, mask)``: scalar loss, (N, L, p*p*C) predictions, (N, L) mask."""
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


def _init_linear_and_norm(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
