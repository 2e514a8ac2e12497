"""The models: the Masked Autoencoder, built lesson by lesson, and the ViT classifier it becomes.

patches    lesson 01   patchify / unpatchify, the patch embedding
masking    lesson 02   random, block and grid masking -> (x_visible, mask, ids_restore)
encoder    lesson 03   the sine-cosine positional table, attention, the Transformer block
decoder    lesson 04   mask tokens and unshuffling, the masked loss, normalized pixels
mae        lessons 03-04 together: MaskedAutoencoder
vit        lesson 07   the ViT classifier that loads an MAE encoder
registry   named models: build_model("mae_vit_base_patch16"), load_model(path)
"""

from .decoder import masked_mse_loss, norm_pix_target, unshuffle_with_mask_tokens
from .encoder import Attention, Block, attention, interpolate_pos_embed, sincos_pos_embed
from .mae import MaskedAutoencoder
from .masking import SAMPLINGS, block_masking, grid_masking, keep_lowest_noise, mask_noise, num_kept, random_masking
from .patches import PatchEmbed, grid_shape, patchify, unpatchify
from .registry import MODEL_CONFIGS, build_model, load_model
from .vit import POOLINGS, VisionTransformer, load_mae_encoder, vit_from_mae

__all__ = [
    "MODEL_CONFIGS",
    "POOLINGS",
    "SAMPLINGS",
    "Attention",
    "Block",
    "MaskedAutoencoder",
    "PatchEmbed",
    "VisionTransformer",
    "attention",
    "block_masking",
    "build_model",
    "grid_masking",
    "grid_shape",
    "interpolate_pos_embed",
    "keep_lowest_noise",
    "load_mae_encoder",
    "load_model",
    "mask_noise",
    "masked_mse_loss",
    "norm_pix_target",
    "num_kept",
    "patchify",
    "random_masking",
    "sincos_pos_embed",
    "unpatchify",
    "unshuffle_with_mask_tokens",
    "vit_from_mae",
]
