"""Lessons 03-05: named model configurations, the paper's ViT-B/L/H and small ones that
train on a CPU.

``build_model(name, **overrides)`` is the one way to make a model from a name; the
factory functions below are shortcuts for it.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from ..checkpoint import load_checkpoint, load_weights, state_dict_of
from ..config import MAX_IMAGE_SIZE
from ..errors import CheckpointError, ConfigError
from .mae import MaskedAutoencoder
from .masking import SAMPLINGS, num_kept

_PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)

DEFAULT_MODEL = "mae_vit_mini_patch4_32"  # the course's architecture: pretraining's default, a random start's
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


# What each constructor setting of MaskedAutoencoder may be (the same checks before any model is built).
_POSITIVE_INTS = (
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "decoder_embed_dim",
    "decoder_depth",
    "decoder_num_heads",
)
_BOOLS = ("norm_pix_loss", "mask_token_in_encoder")
# Bounds far beyond any real ViT (ViT-H: 1280 wide, 32 blocks, 256 patches, 0.6 billion parameters) that stop
# a crafted config (a checkpoint's header, a save_pretrained folder) before it allocates terabytes or loops
# for hours building a billion blocks.
MAXIMA = {
    "img_size": MAX_IMAGE_SIZE,
    "in_chans": 64,
    "embed_dim": 16384,
    "depth": 256,
    "decoder_embed_dim": 16384,
    "decoder_depth": 256,
    "mlp_ratio": 64,
}
MAX_PATCHES = 65_536
MAX_PARAMETERS = 5_000_000_000


def parameter_count(s: dict[str, Any]) -> int:
    """About how many numbers (parameters and positional tables) a model of checked settings ``s`` holds;
    without decoder settings, the encoder's alone."""
    patches, pixels = (s["img_size"] // s["patch_size"]) ** 2, s["patch_size"] ** 2 * s.get("in_chans", 3)

    def tower(width: int, depth: int) -> int:  # blocks (attention 4 D^2, MLP 2 D x mlp_ratio D), tokens, norm
        hidden = int(width * s.get("mlp_ratio", 4.0))
        return depth * (4 * width * width + 2 * width * hidden + 9 * width + hidden) + (patches + 3) * width

    count = tower(s["embed_dim"], s["depth"]) + pixels * s["embed_dim"]
    if "decoder_embed_dim" in s:
        count += tower(s["decoder_embed_dim"], s["decoder_depth"]) + (s["embed_dim"] + pixels) * s["decoder_embed_dim"]
    return count


def check_architecture(settings: dict[str, Any], name: str | None = None) -> None:
    """Raise ConfigError naming the first bad architecture setting of an MAE (or, without decoder settings,
    of a ViT encoder; ``name``: of a registry model), before a tensor is allocated: types, bounds,
    divisibility, size."""
    for key, value in settings.items():
        if key in _POSITIVE_INTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"model setting {key} must be a positive integer, got {value!r}")
        if key in MAXIMA and isinstance(value, int | float) and value > MAXIMA[key]:
            raise ConfigError(f"model setting {key} must be at most {MAXIMA[key]}, got {value!r}")
    ratio = settings.get("mlp_ratio", 4.0)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (math.isfinite(ratio) and ratio > 0):
        raise ConfigError(f"model setting mlp_ratio must be a positive number, got {ratio!r}")
    decoder = "decoder_embed_dim" in settings
    for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads"))[: 1 + decoder]:
        if settings[width] % settings[heads]:
            raise ConfigError(f"model setting {width}={settings[width]} is not divisible by {heads}={settings[heads]}")
    if settings["embed_dim"] % 4 or (decoder and settings["decoder_embed_dim"] % 4):
        raise ConfigError("the sine-cosine positional table needs embed_dim and decoder_embed_dim divisible by 4")
    size, patch = settings["img_size"], settings["patch_size"]
    if size % patch:
        of = f" of {name}" if name else ""
        raise ConfigError(
            f"image size {size} is not divisible by the patch size {patch}{of}; use a multiple of {patch}"
        )
    if (size // patch) ** 2 > MAX_PATCHES:
        raise ConfigError(
            f"image size {size} with patch size {patch} makes {(size // patch) ** 2} patches, more than "
            f"{MAX_PATCHES}; use a larger patch size or a smaller image"
        )
    if (count := parameter_count(settings)) > MAX_PARAMETERS:
        raise ConfigError(
            f"these model settings would hold {count / 1e9:.1f} billion parameters, more than "
            f"{MAX_PARAMETERS // 10**9} billion"
        )


def check_model_settings(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The named model's settings with ``overrides``, checked; raises ConfigError naming the first bad one.

    Catches what would otherwise fail deep inside the constructor (a division by a zero patch
    size), build a broken model silently (a negative decoder depth) or eat the memory (a width of 2^40).
    """
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    known = set(inspect.signature(MaskedAutoencoder).parameters)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"cannot build model {name}: unknown setting {unknown[0]!r}; allowed: {', '.join(sorted(known))}"
        )
    settings = {**MODEL_CONFIGS[name], **overrides}
    for key in _BOOLS:
        if key in settings and not isinstance(settings[key], bool):
            raise ConfigError(f"model setting {key} must be true or false, got {settings[key]!r}")
    check_architecture(settings, name)
    sampling = settings.get("mask_sampling", "random")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"unknown mask sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    return settings


def check_mask_ratio(mask_ratio: float, settings: dict[str, Any]) -> None:
    """Raise ConfigError unless ``mask_ratio`` is in (0, 1) and keeps at least one patch of the model
    whose ``settings`` :func:`check_model_settings` returned: the one check every command's ``validate()`` makes."""
    if not 0 < mask_ratio < 1:
        raise ConfigError(f"mask ratio must be between 0 and 1 (exclusive), got {mask_ratio}")
    try:
        num_kept((settings["img_size"] // settings["patch_size"]) ** 2, mask_ratio)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_model(name: str, **overrides: Any) -> MaskedAutoencoder:
    """Make the named MAE, with any constructor argument overridden.

    >>> build_model("mae_vit_tiny_patch4_32", norm_pix_loss=True).config["norm_pix_loss"]
    True
    """
    model = MaskedAutoencoder(**check_model_settings(name, overrides))
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

    The course's own checkpoints carry their model config, so ``load_model("runs/x/model.safetensors")``
    is enough (a course ``.pth`` too). Released MAE files carry none: name the architecture, e.g.
    ``load_model("mae_visualize_vit_large.pth", "mae_vit_large_patch16")``.
    """
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config", {}).get("model") if isinstance(checkpoint.get("config"), dict) else None
    kwargs: dict[str, Any] = {}
    if config is not None:
        if not isinstance(config, dict) or not isinstance(config.get("name", ""), str):
            raise CheckpointError(
                f"{path} holds a model config that is not a dictionary of settings: {str(config)[:80]}"
            )
        kwargs = {k: v for k, v in config.items() if k != "name"}
        name = name or config.get("name")
    if name is None:
        raise CheckpointError(
            f"{path} carries no model config (a released MAE file?); name the model, "
            f"e.g. load_model(path, 'mae_vit_large_patch16')"
        )
    try:
        model = build_model(name, **{**kwargs, **overrides})
    except (ValueError, TypeError) as e:  # a crafted or foreign config: say so in the checkpoint's terms
        raise CheckpointError(f"{path} holds a model config that does not build ({e})") from None
    load_weights(model, state_dict_of(checkpoint), strict=strict)
    return model
