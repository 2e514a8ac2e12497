"""mae_course: Masked Autoencoders (He et al., 2021), built step by step and tested.

The reference implementation the lessons converge to. One concept per module:

    patches      patchify / unpatchify
    masking      random, block and grid masking -> (x_visible, mask, ids_restore)
    pos_embed    fixed 2D sine-cosine positional tables, and resizing them
    transformer  the pre-norm ViT block (attention through scaled_dot_product_attention)
    mae          MaskedAutoencoder: encoder on visible patches, light decoder, masked loss
    loss         masked MSE and the normalized-pixel target
    registry     named models: build_model("mae_vit_base_patch16"), small CPU models
    checkpoint   safe saving and loading, official checkpoints included
    data         the built-in shapes dataset and the shipped photos
    pretrain     the pretraining job behind `python -m mae_course pretrain`
    step         the training step, plain or fast (bf16, fused AdamW, compile, checkpointing)
    gpu_data     the GPU data pipeline: JPEGs decoded and augmented on the device
    checks       the automatic checks of the lessons' exercises
    figures      the lessons' figures (patch grids, masks, Figure 1 drawn)
    flops        FLOP counts from the architecture
"""

from .checkpoint import load_checkpoint, load_weights
from .loss import masked_mse_loss, norm_pix_target
from .mae import MaskedAutoencoder, unshuffle_with_mask_tokens
from .masking import block_masking, grid_masking, random_masking
from .patches import patchify, unpatchify
from .pos_embed import interpolate_pos_embed, sincos_pos_embed
from .registry import (
    MODEL_CONFIGS,
    build_model,
    load_model,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_mini_patch4_32,
    mae_vit_mini_patch8_64,
    mae_vit_tiny_patch4_32,
    mae_vit_tiny_patch8_64,
)

__version__ = "0.1.0"

__all__ = [
    "MODEL_CONFIGS",
    "MaskedAutoencoder",
    "block_masking",
    "build_model",
    "grid_masking",
    "interpolate_pos_embed",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_mini_patch4_32",
    "mae_vit_mini_patch8_64",
    "mae_vit_tiny_patch4_32",
    "mae_vit_tiny_patch8_64",
    "masked_mse_loss",
    "norm_pix_target",
    "patchify",
    "random_masking",
    "sincos_pos_embed",
    "unpatchify",
    "unshuffle_with_mask_tokens",
]
