"""Lesson 06: the course's models in Hugging Face ``transformers`` and ``timm``, and back.

Three libraries, one architecture. Only the parameter names (and one fused projection) differ:

    ours (the official MAE layout)     transformers ViTMAEForPreTraining        timm VisionTransformer
    cls_token, pos_embed               vit.embeddings.cls_token, ...            cls_token, pos_embed
    patch_embed.proj                   vit.embeddings.patch_embeddings.projection   patch_embed.proj
    blocks.{i}.attn.qkv  (3D, D)       vit.layers.{i}.attention.{q,k,v}_proj    blocks.{i}.attn.qkv
    blocks.{i}.norm1 / mlp.fc1 ...     vit.layers.{i}.layernorm_before / ...    blocks.{i}.norm1 / ...
    norm                               vit.layernorm                            norm
    decoder_* , mask_token             decoder.decoder_* , decoder.mask_token   (no decoder)

So a conversion is a renaming, plus splitting our fused ``qkv`` weight (3D, D) into three (D, D)
projections for transformers (and concatenating them back). timm uses the official names
already: an MAE encoder or the course's classifier loads into timm's ViT unchanged.

    to_transformers(mae)        -> ViTMAEForPreTraining, same loss and predictions for the same noise
    from_transformers(source)   <- a ViTMAEForPreTraining, a save_pretrained folder or a hub name
    to_timm(mae or classifier)  -> timm VisionTransformer, same features (or logits)

``tests/test_interop.py`` checks each direction by comparing outputs, not just names.
``transformers`` and ``timm`` are optional and imported only when a function here needs them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_weights
from .errors import CheckpointError, ConfigError
from .model.mae import MaskedAutoencoder
from .model.registry import MODEL_CONFIGS, build_model, check_architecture
from .model.vit import PRETRAINING_ONLY, VisionTransformer

HF_MODEL = "transformers ViTMAEForPreTraining"
# LayerNorm eps: ours and the official code use 1e-6. The hub's facebook/vit-mae-* configs say 1e-12
# (transformers' default) for weights the official code trained with 1e-6. We load those with 1e-6,
# the eps they were trained with: outputs then differ from transformers' own run of that config by
# about 1e-4 (the course's shipped mini model: 2e-4 on predictions of size 3).
_ACCEPTED_EPS = (1e-6, 1e-12)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"converting to or from {HF_MODEL} needs the transformers package: pip install transformers"
        ) from None
    return transformers


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError("converting to timm needs the timm package: pip install timm") from None
    return timm


def _like(converted: nn.Module, source: nn.Module) -> nn.Module:
    """``converted`` on the device and in the dtype and train/eval mode of ``source``."""
    first = next(source.parameters())
    return converted.to(device=first.device, dtype=first.dtype).train(source.training)


# ---------------------------------------------------------------------------------------- transformers
def transformers_config(config: dict[str, Any], mask_ratio: float = 0.75):
    """The ``ViTMAEConfig`` with the architecture of one of our model configs (``model.config``)."""
    ratio = config.get("mlp_ratio", 4.0)
    return _transformers().ViTMAEConfig(
        image_size=config["img_size"],
        patch_size=config["patch_size"],
        num_channels=config.get("in_chans", 3),
        hidden_size=config["embed_dim"],
        num_hidden_layers=config["depth"],
        num_attention_heads=config["num_heads"],
        intermediate_size=int(config["embed_dim"] * ratio),
        decoder_hidden_size=config["decoder_embed_dim"],
        decoder_num_hidden_layers=config["decoder_depth"],
        decoder_num_attention_heads=config["decoder_num_heads"],
        decoder_intermediate_size=int(config["decoder_embed_dim"] * ratio),
        mask_ratio=mask_ratio,
        norm_pix_loss=config.get("norm_pix_loss", False),
        hidden_act="gelu",  # exact GELU, as ours
        layer_norm_eps=1e-6,  # as ours and the official code (the transformers default is 1e-12)
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa",  # the same attention kernels as ours
    )


def transformers_model(config: dict[str, Any], mask_ratio: float = 0.75) -> nn.Module:
    """A freshly initialised ``ViTMAEForPreTraining`` with the architecture of ``config``."""
    return _transformers().ViTMAEForPreTraining(transformers_config(config, mask_ratio))


# Our block parameters -> transformers', in the two layouts it has used: encoder block prefix,
# then attention q/k/v, attention output, norm1, norm2, fc1, fc2. Decoder blocks share the inner names.
_LAYOUTS = {  # one row per layout
    "v5": ("vit.layers.{i}.", "attention.{x}_proj", "attention.o_proj", "layernorm_before", "layernorm_after",
           "mlp.fc1", "mlp.fc2"),
    "v4": ("vit.encoder.layer.{i}.", "attention.attention.{x}", "attention.output.dense", "layernorm_before",
           "layernorm_after", "intermediate.dense", "output.dense"),
}  # fmt: skip
_QKV_NAMES = {"v5": ("q", "k", "v"), "v4": ("query", "key", "value")}
_OUTSIDE_BLOCKS = {
    "cls_token": "vit.embeddings.cls_token",
    "pos_embed": "vit.embeddings.position_embeddings",
    "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
    "norm.weight": "vit.layernorm.weight",
    "norm.bias": "vit.layernorm.bias",
    **{name: f"decoder.{name}" for name in ("mask_token", "decoder_pos_embed")},
    **{f"decoder_{m}.{w}": f"decoder.decoder_{m}.{w}" for m in ("embed", "norm", "pred") for w in ("weight", "bias")},
}


def transformers_names(our_keys, hf_keys) -> dict[str, list[str]]:
    """Each of our parameter names -> the transformers names that hold it: one, or three (q, k, v)
    for the fused ``qkv`` projection, in the layout (v4 or v5) that ``hf_keys`` use."""
    layout = "v5" if any(k.startswith("vit.layers.") for k in hf_keys) else "v4"
    encoder_block, qkv, proj, norm1, norm2, fc1, fc2 = _LAYOUTS[layout]
    renamed = {"attn.proj": proj, "norm1": norm1, "norm2": norm2, "mlp.fc1": fc1, "mlp.fc2": fc2}
    names = {}
    for key in our_keys:
        match = re.fullmatch(r"(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)", key)
        if match is None:
            names[key] = [_OUTSIDE_BLOCKS.get(key, key)]
            continue
        side, i, part, kind = match.groups()
        prefix = (encoder_block if side == "blocks" else "decoder.decoder_layers.{i}.").format(i=i)
        if part == "attn.qkv":
            names[key] = [f"{prefix}{qkv.format(x=x)}.{kind}" for x in _QKV_NAMES[layout]]
        else:
            names[key] = [f"{prefix}{renamed[part]}.{kind}"]
    mapped = {name for group in names.values() for name in group}
    missing, unexpected = set(hf_keys) - mapped, mapped - set(hf_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"cannot map onto this transformers version's ViTMAE: missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(unexpected)[:4]}"
        )
    return names


def transformers_state_dict(model: nn.Module, hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """Our model's weights in ``hf_model``'s names and shapes: qkv (3D, D) -> q, k, v (D, D) each."""
    ours = model.state_dict()
    out = {}
    for key, hf_names in transformers_names(ours, hf_model.state_dict()).items():
        out.update(zip(hf_names, ours[key].chunk(len(hf_names), dim=0), strict=True))
    return out


def to_transformers(model: MaskedAutoencoder, mask_ratio: float = 0.75) -> nn.Module:
    """Our MAE as a ``transformers.ViTMAEForPreTraining`` with the same weights.

    For (N, C, H, W) images and the same (N, L) noise, ``hf(pixel_values=imgs, noise=noise)``
    gives our ``model(imgs, mask_ratio, noise)``'s loss (``.loss``), predictions (N, L, p*p*C)
    (``.logits``) and mask (``.mask``). The masking ratio, an argument of our forward, is part of
    the transformers config; so is ``norm_pix_loss``. Device, dtype and train/eval mode follow ours.
    """
    if model.config.get("mask_token_in_encoder"):
        raise ConfigError("the encoder-with-mask-tokens baseline (Table 1c) has no transformers counterpart")
    hf_model = transformers_model(model.config, mask_ratio)
    hf_model.load_state_dict(transformers_state_dict(model, hf_model))
    return _like(hf_model, model)


def settings_from_transformers(hf_config) -> dict[str, Any]:
    """Our MaskedAutoencoder's settings for a ``ViTMAEConfig``, checked with the bounds of
    :func:`~mae_course.model.registry.check_architecture` (before any model is built); one-line
    CheckpointError for what we lack or refuse."""
    c = hf_config
    sizes = [(c.image_size, "image_size"), (c.patch_size, "patch_size")]
    problems = [f"{name} {value} is not square" for value, name in sizes if isinstance(value, list | tuple)]
    if c.hidden_act != "gelu":
        problems.append(f"hidden_act {c.hidden_act!r} (ours is the exact GELU, 'gelu')")
    if not any(abs(c.layer_norm_eps - eps) <= 1e-3 * eps for eps in _ACCEPTED_EPS):
        problems.append(f"layer_norm_eps {c.layer_norm_eps} (ours is 1e-6)")
    if not c.qkv_bias:
        problems.append("qkv_bias False (ours has a bias)")
    if problems:
        raise CheckpointError(f"cannot convert this ViTMAE to the course's model: {'; '.join(problems)}")
    try:
        ratio = c.intermediate_size / c.hidden_size
    except (TypeError, ZeroDivisionError):
        ratio = None  # the hidden size is named below
    settings = dict(
        img_size=c.image_size,
        patch_size=c.patch_size,
        in_chans=c.num_channels,
        embed_dim=c.hidden_size,
        depth=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        decoder_embed_dim=c.decoder_hidden_size,
        decoder_depth=c.decoder_num_hidden_layers,
        decoder_num_heads=c.decoder_num_attention_heads,
        mlp_ratio=ratio,
        norm_pix_loss=bool(c.norm_pix_loss),
    )
    try:
        check_architecture(settings)
    except ConfigError as e:
        raise CheckpointError(f"cannot convert this ViTMAE to the course's model: {e}") from None
    widths = (int(c.hidden_size * ratio), int(c.decoder_hidden_size * ratio))  # what our blocks would build
    if widths != (c.intermediate_size, c.decoder_intermediate_size):
        raise CheckpointError(
            f"cannot convert this ViTMAE to the course's model: MLP widths {c.intermediate_size}/"
            f"{c.hidden_size} and {c.decoder_intermediate_size}/{c.decoder_hidden_size} (ours has "
            "one mlp_ratio)"
        )
    return settings


def registry_name(settings: dict[str, Any]) -> str | None:
    """The registry model (``MODEL_CONFIGS``) with the architecture of ``settings``, if one has it."""
    return next((n for n, arch in MODEL_CONFIGS.items() if all(settings.get(k) == v for k, v in arch.items())), None)


def _build(settings: dict[str, Any]) -> MaskedAutoencoder:
    """A MaskedAutoencoder with (checked) ``settings``, under its registry name when it has one."""
    name = registry_name(settings)
    try:
        return build_model(name, **settings) if name else MaskedAutoencoder(**settings)
    except ValueError as e:
        raise CheckpointError(f"cannot build the course's model for this ViTMAE: {e}") from None


def _offline() -> bool:
    """Whether the environment asks huggingface_hub for offline mode (read now, not at its import)."""
    return any(
        os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


# The from_pretrained arguments that say where the files come from (the config is read with them first).
_WHERE = ("cache_dir", "revision", "local_files_only", "token", "force_download", "proxies", "subfolder")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load(source: str | Path, **from_pretrained: Any) -> tuple[nn.Module, dict[str, Any]]:
    """``ViTMAEForPreTraining.from_pretrained`` of a folder or hub name, and our settings for it: its config
    is read and checked first, so a crafted one never builds a model; any failure is one CheckpointError."""
    transformers = _transformers()
    path = Path(source).expanduser()
    if path.is_dir():
        where, failed, hint = path, f"cannot load {path} as a ViTMAE", ""
    elif path.exists() or str(source).startswith((".", "/", "~")):
        raise CheckpointError(
            f"{source} is not a folder made with save_pretrained, nor a hub name like facebook/vit-mae-base"
        )
    else:
        from_pretrained.setdefault("local_files_only", _offline())  # no network retries when offline
        where, failed = str(source), f"cannot load {str(source)!r} from the Hugging Face hub (offline?)"
        hint = "; pass a local folder made with save_pretrained"
    try:  # transformers raises many types for a bad folder: OSError, ValueError, SafetensorError, RuntimeError ...
        config = transformers.ViTMAEConfig.from_pretrained(
            where, **{k: v for k, v in from_pretrained.items() if k in _WHERE}
        )
    except Exception as e:
        raise CheckpointError(f"{failed}: {_first_line(e)}{hint}") from None
    settings = settings_from_transformers(config)
    try:
        return transformers.ViTMAEForPreTraining.from_pretrained(where, config=config, **from_pretrained), settings
    except Exception as e:
        raise CheckpointError(f"{failed}: {_first_line(e)}{hint}") from None


def from_transformers(source: Any, **from_pretrained: Any) -> MaskedAutoencoder:
    """Our MaskedAutoencoder from a transformers ViTMAE, with the same weights and outputs.

    Args:
        source: a ``ViTMAEForPreTraining``; a folder written by its ``save_pretrained``; or a hub
            name such as ``"facebook/vit-mae-base"`` (downloaded when online, else taken from the
            cache). With ``HF_HUB_OFFLINE=1`` only the cache is tried.
        from_pretrained: passed on to ``from_pretrained`` (``cache_dir``, ``revision``, ...).

    Returns:
        the model on the source's device, dtype and mode; ``model.config["name"]`` names the
        registry model of the same architecture (``mae_vit_base_patch16`` for facebook/vit-mae-base)
        when one exists. The transformers ``mask_ratio`` is the source's config, not the model's:
        pass ``model(imgs, mask_ratio=hf.config.mask_ratio)``. A config that says
        ``layer_norm_eps=1e-12`` (the hub's, for weights trained with 1e-6) gets our 1e-6;
        other differences we cannot compute (activation, eps, no qkv bias), settings out of
        bounds and folders that do not load raise CheckpointError.
    """
    transformers = _transformers()
    if isinstance(source, nn.Module):
        if not isinstance(source, transformers.ViTMAEForPreTraining):
            raise CheckpointError(f"from_transformers takes a ViTMAEForPreTraining, got {type(source).__name__}")
        hf_model, settings = source, settings_from_transformers(source.config)
    else:
        hf_model, settings = _load(source, **from_pretrained)
    model = _build(settings)
    hf_weights = hf_model.state_dict()
    names = transformers_names(model.state_dict(), hf_weights)
    load_weights(model, {key: torch.cat([hf_weights[n] for n in hf_names]) for key, hf_names in names.items()})
    return _like(model, hf_model)


# ---------------------------------------------------------------------------------------- timm
def _timm_parts(model: nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(architecture, weights in timm's names, timm head settings) of an MAE or a course classifier."""
    if isinstance(model, MaskedAutoencoder):  # the encoder: all tokens after the final norm, no head
        weights = {k: v for k, v in model.state_dict().items() if not k.startswith(PRETRAINING_ONLY)}
        return model.config, weights, dict(num_classes=0, global_pool="token")
    if isinstance(model, VisionTransformer):  # the same pooling and head: cls after norm, or mean + fc_norm
        head = dict(num_classes=model.config["num_classes"], global_pool=model.config["global_pool"])
        return model.config, model.state_dict(), {**head, "drop_path_rate": model.config["drop_path"]}
    raise ConfigError(
        f"to_timm takes a MaskedAutoencoder or the course's VisionTransformer, got {type(model).__name__}"
    )


def _architecture(vit: nn.Module) -> dict[str, Any]:
    """The settings that make a ViT encoder, read off a timm VisionTransformer."""
    return dict(
        img_size=vit.patch_embed.img_size[0],
        patch_size=vit.patch_embed.patch_size[0],
        in_chans=vit.patch_embed.proj.in_channels,
        embed_dim=vit.embed_dim,
        depth=len(vit.blocks),
        num_heads=vit.blocks[0].attn.num_heads,
        mlp_width=vit.blocks[0].mlp.fc1.out_features,
    )


def _check_same_architecture(vit: nn.Module, name: str, config: dict[str, Any], weights: dict) -> None:
    """One-line ConfigError unless timm's ``name`` computes what our model does."""
    theirs = _architecture(vit)
    ours = {"in_chans": 3, **config, "mlp_width": int(config["embed_dim"] * config.get("mlp_ratio", 4.0))}
    differences = [f"{k} {theirs[k]} (ours {ours[k]})" for k in theirs if theirs[k] != ours[k]]
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    if not differences and shapes != {k: tuple(v.shape) for k, v in weights.items()}:
        extra = sorted(set(shapes) ^ set(weights)) or [k for k in shapes if shapes[k] != tuple(weights[k].shape)]
        differences.append(f"parameters {', '.join(extra[:3])} differ")  # layer scale, register tokens, ...
    act = vit.blocks[0].mlp.act
    if not (type(act) is nn.GELU and act.approximate == "none"):
        differences.append(f"activation {act} (ours is the exact GELU)")
    if any(m.eps != 1e-6 for m in vit.modules() if isinstance(m, nn.LayerNorm)):
        differences.append("LayerNorm eps (ours is 1e-6)")
    if differences:
        raise ConfigError(f"timm's {name} is not this model's architecture: {'; '.join(differences)}")


def to_timm(model: nn.Module, name: str | None = None) -> nn.Module:
    """An MAE's encoder, or a course classifier, as a ``timm.models.vision_transformer.VisionTransformer``.

    Args:
        model: a MaskedAutoencoder (its encoder becomes a headless ViT: ``forward_features(imgs)``
            is (N, 1 + L, D), every token of the whole image after the final norm, and
            ``vit(imgs)`` the (N, D) normed cls token), or the course's VisionTransformer
            classifier (same pooling, "token" or "avg" + fc_norm, and head: equal logits).
        name: a timm model name such as ``"vit_base_patch16_224"``, built with
            ``pretrained=False`` and checked to be the same architecture (ConfigError otherwise).
            Without one, the ViT is built from the model's config (the course's small models
            have no timm name).
    """
    config, weights, head = _timm_parts(model)
    timm = _timm()
    if name is None:  # timm's defaults are ours: LayerNorm eps 1e-6, exact GELU, a cls token
        vit = timm.models.vision_transformer.VisionTransformer(
            img_size=config["img_size"],
            patch_size=config["patch_size"],
            in_chans=config.get("in_chans", 3),
            embed_dim=config["embed_dim"],
            depth=config["depth"],
            num_heads=config["num_heads"],
            mlp_ratio=config.get("mlp_ratio", 4.0),
            qkv_bias=True,
            **head,
        )
    else:
        try:
            vit = timm.create_model(name, pretrained=False, **head)
        except (RuntimeError, TypeError) as e:  # an unknown name, or not a VisionTransformer's settings
            raise ConfigError(f"cannot build timm model {name!r}: {str(e).splitlines()[0]}") from None
        if not isinstance(vit, timm.models.vision_transformer.VisionTransformer):
            raise ConfigError(f"timm's {name} is a {type(vit).__name__}, not a VisionTransformer")
        _check_same_architecture(vit, name, config, weights)
    vit.load_state_dict(weights)
    return _like(vit, model)
