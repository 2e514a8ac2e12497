"""mae_course: Masked Autoencoders (He et al., 2021), built step by step and tested.

The reference implementation the lessons converge to, one folder per part of the story:

    model/        lessons 01-04, 07: patches, masking, the encoder's and decoder's pieces,
                  MaskedAutoencoder, the ViT classifier, named models
    data/         the built-in shapes, shipped photos and results, real datasets, transforms,
                  the GPU decoding pipeline, `prepare`, and the pretraining batches of either pipeline
    train/        lesson 05: the recipe (lr rule and schedule, AdamW groups, the plain training
                  step), the fast step, the one epoch loop, run folders, torch.distributed, pretraining
    evaluation/   lesson 07: the probe head, layer-wise lr decay, LARS, fine-tuning and linear
                  probing on the same loop, accuracy, and all three protocols at once
    experiments/  lessons 02, 08-09: non-learned inpainting, FLOPs, ablation sweeps, Table 2 and
                  throughput benchmarks, the transformers peer, the batch and time arithmetic of scaling
    seeing/       lesson 06: reconstructions, the masking explorer, the released checkpoints
    checks/       the automatic checks of the exercises (checks/<module>.py checks that module)

and, beside them, ``config`` (every job's settings, defined once; the command line is generated
from them), ``checkpoint`` (safe loading, atomic saving), ``safe_files`` (atomic writes, folder
locks), ``interop`` (the models to and from Hugging Face transformers and timm), ``figures`` (the
lessons' drawings), ``errors``, ``provenance``, ``lesson`` and ``cli`` (``python -m mae_course``).
"""

from .checkpoint import load_checkpoint, load_weights, save_weights
from .model import (
    MODEL_CONFIGS,
    MaskedAutoencoder,
    block_masking,
    build_model,
    grid_masking,
    interpolate_pos_embed,
    load_model,
    masked_mse_loss,
    norm_pix_target,
    patchify,
    random_masking,
    sincos_pos_embed,
    unpatchify,
    unshuffle_with_mask_tokens,
)
from .model.registry import (
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
    "save_weights",
    "sincos_pos_embed",
    "unpatchify",
    "unshuffle_with_mask_tokens",
]
