"""Lesson 09: the peer implementation, Hugging Face ``transformers``' ``ViTMAEForPreTraining``, built to match ours.

The benchmark times it next to the course's model on the same configuration, dtype and attention
kernel (``scaled_dot_product_attention``), and a test checks the two compute the same loss from the
same weights and noise: the strongest evidence that both implement the paper's method.

``transformers`` is optional (``pip install transformers``); everything here imports it lazily and
says so plainly when it is missing.
"""

from __future__ import annotations

import re
from typing import Any

import torch

PEER = "transformers ViTMAEForPreTraining"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"the peer implementation ({PEER}) needs the transformers package: pip install transformers"
        ) from None
    return transformers


def peer_config(config: dict[str, Any]):
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
        norm_pix_loss=config.get("norm_pix_loss", False),
        hidden_act="gelu",  # exact GELU, as ours
        layer_norm_eps=1e-6,  # as ours and the official code (the transformers default is 1e-12)
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa",  # the same attention kernels as ours
    )


def build_peer(config: dict[str, Any], mask_ratio: float = 0.75) -> torch.nn.Module:
    """A ``ViTMAEForPreTraining`` with the architecture of ``config`` and the given masking ratio."""
    hf_config = peer_config(config)
    hf_config.mask_ratio = mask_ratio
    return _transformers().ViTMAEForPreTraining(hf_config)


# Our block parameters (the official MAE layout) -> the peer's, in the two layouts transformers has
# used: encoder block prefix, then attention q/k/v, attention output, norm1, norm2, fc1, fc2.
_LAYOUTS = {
    "v5": ("vit.layers.{i}.", "attention.{x}_proj", "attention.o_proj", "layernorm_before", "layernorm_after",
           "mlp.fc1", "mlp.fc2"),
    "v4": ("vit.encoder.layer.{i}.", "attention.attention.{x}", "attention.output.dense", "layernorm_before",
           "layernorm_after", "intermediate.dense", "output.dense"),
}  # fmt: skip
_QKV_NAMES = {"v5": ("q", "k", "v"), "v4": ("query", "key", "value")}


def peer_state_dict(model: torch.nn.Module, peer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our model's weights in the peer's names and shapes (the fused qkv projection split in three)."""
    keys = set(peer.state_dict())
    layout = "v5" if any(k.startswith("vit.layers.") for k in keys) else "v4"
    encoder_block, qkv, proj, norm1, norm2, fc1, fc2 = _LAYOUTS[layout]
    renamed = {"attn.proj": proj, "norm1": norm1, "norm2": norm2, "mlp.fc1": fc1, "mlp.fc2": fc2}
    ours = model.state_dict()
    out = {
        "vit.embeddings.cls_token": ours["cls_token"],
        "vit.embeddings.position_embeddings": ours["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": ours["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": ours["patch_embed.proj.bias"],
        "vit.layernorm.weight": ours["norm.weight"],
        "vit.layernorm.bias": ours["norm.bias"],
    }
    for name in ("mask_token", "decoder_pos_embed", "decoder_embed.weight", "decoder_embed.bias",
                 "decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"):  # fmt: skip
        out[f"decoder.{name}"] = ours[name]
    for key, value in ours.items():
        match = re.fullmatch(r"(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)", key)
        if match is None:
            continue
        side, i, part, kind = match.groups()
        prefix = (encoder_block if side == "blocks" else "decoder.decoder_layers.{i}.").format(i=i)
        if part == "attn.qkv":
            for x, chunk in zip(_QKV_NAMES[layout], value.chunk(3, dim=0), strict=True):
                out[f"{prefix}{qkv.format(x=x)}.{kind}"] = chunk
        else:
            out[f"{prefix}{renamed[part]}.{kind}"] = value
    missing, unexpected = keys - set(out), set(out) - keys
    if missing or unexpected:
        raise KeyError(
            f"cannot map onto this transformers version's ViTMAE: missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(unexpected)[:4]}"
        )
    return out


def load_into_peer(model: torch.nn.Module, peer: torch.nn.Module) -> torch.nn.Module:
    """Copy our model's weights into the peer (in place); returns the peer."""
    peer.load_state_dict(peer_state_dict(model, peer))
    return peer


def peer_loss(peer: torch.nn.Module, imgs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The peer's pretraining loss on (N, C, H, W) images, with optional (N, L) masking noise."""
    return peer(pixel_values=imgs, noise=noise).loss
