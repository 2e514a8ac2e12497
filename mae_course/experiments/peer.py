"""Lesson 09: the peer implementation, Hugging Face ``transformers``' ``ViTMAEForPreTraining``, built to match ours.

The benchmark times it next to the course's model on the same configuration, dtype and attention
kernel (``scaled_dot_product_attention``), and a test checks the two compute the same loss from the
same weights and noise: the strongest evidence that both implement the paper's method.

The conversion itself (configs, parameter names) is :mod:`mae_course.interop`; this module is the
benchmark's glue. ``transformers`` is optional (``pip install transformers``) and imported lazily.
"""

from __future__ import annotations

from typing import Any

import torch

from ..interop import HF_MODEL, transformers_model, transformers_state_dict

PEER = HF_MODEL


def build_peer(config: dict[str, Any], mask_ratio: float = 0.75) -> torch.nn.Module:
    """A ``ViTMAEForPreTraining`` with the architecture of ``config`` and the given masking ratio."""
    return transformers_model(config, mask_ratio)


def load_into_peer(model: torch.nn.Module, peer: torch.nn.Module) -> torch.nn.Module:
    """Copy our model's weights into the peer (in place); returns the peer."""
    peer.load_state_dict(transformers_state_dict(model, peer))
    return peer


def peer_loss(peer: torch.nn.Module, imgs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The peer's pretraining loss on (N, C, H, W) images, with optional (N, L) masking noise."""
    return peer(pixel_values=imgs, noise=noise).loss
