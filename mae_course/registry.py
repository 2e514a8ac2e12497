"""Named model configurations: the paper's ViT-B/L/H and small ones that train on a CPU.

``build_model(name, **overrides)`` is the one way to make a model from a name; the
factory functions below are shortcuts for it.
"""

from __future__ import annotations

from typing import Any

from .checkpoint import load_checkpoint, load_weights, state_dict_of
from .errors import CheckpointError
from .mae import MaskedAutoencoder

_PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    # The paper's models, 224x224 input (Table 3; decoder of Table 1a/1b).
    "mae_vit_base_patch16": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, **_PAPER_DECODER),
    "mae_vit_large_patch16": dict(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, **_PAPER_DECODER),
    "mae_vit_huge_patch14": dict(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16, **_PAPER_DECODER),
    # CPU-sized models for the course's built-in data: an 8x8 grid of patches (64 tokens),
    # so that 75% masking leaves 16 visible patches, as 49 of 196 do at 224 px.
    # "mini" trains in minutes on a laptop CPU; "tiny" has ViT-Ti's width (192) for longer runs.
    "mae_vit_mini_patch4_32": dict(
        img_size=32, patch_size=4, embed_dim=128, depth=6, num_heads=4,
        decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3,
    ),
    "mae_vit_mini_patch8_64": dict(
        img_size=64, patch_size=8, embed_dim=128, depth=6, num_heads=4,
        decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3,
    ),
    "mae_vit_tiny_patch4_32": dict(
        img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
    ),
    "mae_vit_tiny_patch8_64": dict(
        img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
    ),
}  # fmt: skip


def build_model(name: str, **overrides: Any) -> MaskedAutoencoder:
    """Make the named MAE, with any constructor argument overridden.

    >>> build_model("mae_vit_tiny_patch4_32", norm_pix_loss=True).config["norm_pix_loss"]
    True
    """
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    model = MaskedAutoencoder(**{**MODEL_CONFIGS[name], **overrides})
    model.config["name"] = name
    return model


def mae_vit_base_patch16(**overrides: Any) -> MaskedAutoencoder:
    """ViT-B/16 encoder (768-d, 12 blocks, 12 heads) with the 512-d, 8-block decoder."""
    return build_model("mae_vit_base_patch16", **overrides)


def mae_vit_large_patch16(**overrides: Any) -> MaskedAutoencoder:
    """ViT-L/16 encoder (1024-d, 24 blocks, 16 heads) with the 512-d, 8-block decoder."""
    return build_model("mae_vit_large_patch16", **overrides)


def mae_vit_huge_patch14(**overrides: Any) -> MaskedAutoencoder:
    """ViT-H/14 encoder (1280-d, 32 blocks, 16 heads) with the 512-d, 8-block decoder."""
    return build_model("mae_vit_huge_patch14", **overrides)


def mae_vit_mini_patch4_32(**overrides: Any) -> MaskedAutoencoder:
    """32x32 images, 4x4 patches, 128-d 6-block encoder, 96-d 2-block decoder: trains in minutes on a CPU."""
    return build_model("mae_vit_mini_patch4_32", **overrides)


def mae_vit_mini_patch8_64(**overrides: Any) -> MaskedAutoencoder:
    """64x64 images, 8x8 patches, 128-d 6-block encoder, 96-d 2-block decoder."""
    return build_model("mae_vit_mini_patch8_64", **overrides)


def mae_vit_tiny_patch4_32(**overrides: Any) -> MaskedAutoencoder:
    """32x32 images, 4x4 patches, 192-d 6-block encoder, 128-d 2-block decoder: CPU-sized."""
    return build_model("mae_vit_tiny_patch4_32", **overrides)


def mae_vit_tiny_patch8_64(**overrides: Any) -> MaskedAutoencoder:
    """64x64 images, 8x8 patches, 192-d 6-block encoder, 128-d 2-block decoder: CPU-sized."""
    return build_model("mae_vit_tiny_patch8_64", **overrides)


def load_model(path: str, name: str | None = None, strict: bool = True, **overrides: Any) -> MaskedAutoencoder:
    """Build a model and load weights from a checkpoint file.

    The course's own checkpoints carry their model config, so ``load_model("runs/x/model.pth")``
    is enough. Released MAE files carry none: name the architecture, e.g.
    ``load_model("mae_visualize_vit_large.pth", "mae_vit_large_patch16")``.
    """
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config", {}).get("model") if isinstance(checkpoint.get("config"), dict) else None
    kwargs: dict[str, Any] = {}
    if config is not None:
        kwargs = {k: v for k, v in config.items() if k != "name"}
        name = name or config.get("name")
    if name is None:
        raise CheckpointError(
            f"{path} carries no model config (a released MAE file?); name the model, "
            f"e.g. load_model(path, 'mae_vit_large_patch16')"
        )
    model = build_model(name, **{**kwargs, **overrides})
    load_weights(model, state_dict_of(checkpoint), strict=strict)
    return model
