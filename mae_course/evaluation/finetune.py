"""Lesson 07: fine-tuning, end to end or partial (Figure 9), and training from scratch.

    python -m mae_course finetune --checkpoint runs/demo/model.safetensors
    python -m mae_course partial-finetune --checkpoint runs/demo/model.safetensors --blocks 2   # or --mlp-only

The paper's recipe (appendix A.1), scaled to the built-in data: AdamW (0.9, 0.999) with layer-wise
lr decay, drop path, RandAugment, mixup/cutmix, label smoothing and random erasing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from ..config import option
from ..data.transforms import finetune_transform
from ..errors import ConfigError
from ..model.vit import load_mae_encoder, vit_from_mae
from ..train.recipe import OPTIMIZER_IMPL_HELP, OPTIMIZER_IMPLS, make_adamw
from .classify import ClassifyConfig, Recipe, classification_sets, train_classifier
from .protocols import layer_decay_groups, tune_only_last

RECIPE = "fine-tuning recipe"


FINETUNE_IMPL_HELP = f"{OPTIMIZER_IMPL_HELP} (default here: fused on a GPU, for-loop on the CPU)"


@dataclass
class FinetuneConfig(ClassifyConfig):
    """End-to-end (or partial) fine-tuning; the paper's recipe, scaled to the built-in data."""

    output_dir: str = "runs/finetune"
    layer_decay: float = option(0.75, "layer-wise lr decay (paper: 0.75 for ViT-L, 0.65 for ViT-B)", group=RECIPE)
    drop_path: float = option(0.1, "stochastic depth rate of the last block", group=RECIPE)
    smoothing: float = option(0.1, "label smoothing", group=RECIPE)
    mixup: float = option(0.8, "mixup alpha (0: off)", group=RECIPE)
    cutmix: float = option(1.0, "cutmix alpha (0: off)", group=RECIPE)
    randaug: int = option(9, "RandAugment magnitude, 2 ops (0: off)", group=RECIPE)
    reprob: float = option(0.25, "random erasing probability", group=RECIPE)
    crop_min_scale: float = option(0.08, "smallest area fraction of RandomResizedCrop", group=RECIPE)
    optimizer_impl: str | None = option(None, FINETUNE_IMPL_HELP, group="speed", choices=OPTIMIZER_IMPLS)
    tune_blocks: int | None = option(None, "partial fine-tuning: train only the last k blocks (+ head)", cli=False)
    tune_mlp_only: bool = option(False, "partial fine-tuning: train only the last block's MLP (+ head)", cli=False)

    kind = "finetune"

    def validate(self) -> None:
        super().validate()
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer decay must be in (0, 1], got {self.layer_decay}")
        if not (0 <= self.drop_path < 1 and 0 <= self.smoothing < 1 and 0 <= self.reprob <= 1):
            raise ConfigError("drop path and smoothing must be in [0, 1), reprob in [0, 1]")
        if self.mixup < 0 or self.cutmix < 0 or not 0 <= self.randaug <= 30:
            raise ConfigError("mixup and cutmix alphas must be >= 0, randaug magnitude in [0, 30]")
        if not 0 < self.crop_min_scale <= 1:
            raise ConfigError(f"crop min scale must be in (0, 1], got {self.crop_min_scale}")
        if self.tune_blocks is not None and self.tune_blocks < 1:
            raise ConfigError(
                "tune_blocks must be at least 1; tuning 0 blocks is linear probing: use `python -m mae_course linprobe`"
            )
        if self.tune_blocks is not None and self.tune_mlp_only:
            raise ConfigError("choose either the last k blocks or the last block's MLP, not both")


def build(cfg: FinetuneConfig, encoder_config: dict, weights: dict | None, classes: int) -> nn.Module:
    """The ViT classifier, from the MAE encoder's weights (or random ones), partly frozen if asked."""
    model = vit_from_mae(encoder_config, classes, global_pool=cfg.global_pool, drop_path=cfg.drop_path)
    if weights is not None:
        load_mae_encoder(model, weights)
    if cfg.tune_blocks is not None or cfg.tune_mlp_only:
        tune_only_last(model, cfg.tune_blocks, cfg.tune_mlp_only)
    return model


def default_impl(device: torch.device) -> str:
    """Fine-tuning's AdamW kernel when --optimizer-impl names none: fused on a GPU, the for-loop on the CPU,
    the kernels its results have always been measured with. ("auto" is fused on the CPU too: faster, but it
    rounds differently, so the same seed would give other losses.)"""
    return "fused" if device.type == "cuda" else "for-loop"


def optimizer(cfg: FinetuneConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW with betas (0.9, 0.999) over layer-wise lr-decay groups, by :func:`make_adamw`."""
    groups = layer_decay_groups(model, cfg.weight_decay, cfg.layer_decay)
    impl = cfg.optimizer_impl or default_impl(next(model.parameters()).device)
    return make_adamw(model, lr, betas=(0.9, 0.999), impl=impl, groups=groups)


def loss(cfg: FinetuneConfig, classes: int) -> Callable[..., torch.Tensor]:
    """Soft-target cross-entropy: one of mixup or cutmix per batch (as the official switch 0.5),
    then label smoothing."""
    mixers = []
    if cfg.mixup > 0:
        mixers.append(v2.MixUp(alpha=cfg.mixup, num_classes=classes))
    if cfg.cutmix > 0:
        mixers.append(v2.CutMix(alpha=cfg.cutmix, num_classes=classes))
    mix = v2.RandomChoice(mixers) if mixers else None

    def loss_fn(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if mix is not None:
            inputs, soft = mix(inputs, targets)
        else:
            soft = F.one_hot(targets, classes).float()
        soft = soft * (1 - cfg.smoothing) + cfg.smoothing / classes
        logits = module(inputs).float()
        return torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()

    return loss_fn


def datasets(cfg: FinetuneConfig):
    """The classification splits, the training images augmented by the fine-tuning recipe."""
    return classification_sets(cfg, finetune_transform(cfg.image_size, cfg.crop_min_scale, cfg.randaug, cfg.reprob))


FINETUNE = Recipe(datasets=datasets, build=build, optimizer=optimizer, loss=loss)  # on the images themselves


def finetune(cfg: FinetuneConfig, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fine-tune (all blocks, the last k, or the last MLP) or train from scratch; returns the final metrics."""
    return train_classifier(cfg, FINETUNE, on_step)
