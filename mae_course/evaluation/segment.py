"""Lesson 10: transfer to dense prediction, in miniature (the paper's Tables 4 and 5).

    python -m mae_course segment --checkpoint runs/demo/model.safetensors   # from an MAE encoder
    python -m mae_course segment --checkpoint runs/sup/model.safetensors    # from a supervised classifier's encoder
    python -m mae_course segment                                            # from random weights

Every pixel of a built-in image gets a class: the background, or the shape that covers it. The
encoder is a ViT loaded from any checkpoint: an MAE's encoder, or the encoder of a classifier
trained on the images' labels (supervised pretraining). A light head maps each patch token to the
class scores of its p x p pixels, one linear layer, as MAE's ``decoder_pred`` maps a token to its
pixels; the whole network is then fine-tuned, as the paper fine-tunes its detectors and UperNet
on COCO and ADE20K. The measure is the mean intersection-over-union over the classes (mIoU)
and the pixel accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..checkpoint import load_checkpoint, load_weights, state_dict_of
from ..config import need, option
from ..data.builtin import BuiltinSegmentation
from ..data.datasets import BUILTIN, builtin_source_size
from ..data.transforms import segmentation_transform
from ..errors import CheckpointError, ConfigError
from ..model.registry import check_architecture
from ..model.vit import VisionTransformer, encoder_settings, encoder_state_dict
from ..train.recipe import OPTIMIZER_IMPLS
from .classify import ClassifyConfig, Recipe, train_classifier
from .finetune import FINETUNE_IMPL_HELP
from .finetune import optimizer as finetune_optimizer

MAX_CLASSES = 1000  # pixel classes a segmentation head may have (the built-in images have a handful)


@dataclass
class SegmentConfig(ClassifyConfig):
    """Fine-tuning a ViT to label every pixel of the built-in images."""

    output_dir: str = "runs/segment"
    checkpoint: str | None = option(
        None, "an MAE checkpoint, or a classifier's (its encoder is used); none: random initialisation", group="encoder"
    )
    global_pool: str = option("token", "every patch token is used, after the encoder's final norm", cli=False)
    layer_decay: float = option(0.75, "layer-wise lr decay", group="segmentation recipe")
    drop_path: float = option(0.1, "stochastic depth rate of the last block", group="segmentation recipe")
    optimizer_impl: str | None = option(None, FINETUNE_IMPL_HELP, group="speed", choices=OPTIMIZER_IMPLS)
    epochs: int = 10
    batch_size: int = 64

    kind = "segment"

    def validate(self) -> None:
        super().validate()
        if self.data != BUILTIN:
            raise ConfigError(
                f"segmentation needs a label for every pixel: only the built-in data has them, not {self.data!r}"
            )
        if not 0 < self.layer_decay <= 1 or not 0 <= self.drop_path < 1:
            raise ConfigError("layer decay must be in (0, 1] and drop path in [0, 1)")


class SegmentationViT(VisionTransformer):
    """A ViT whose head labels pixels: (N, C, H, W) images -> (N, classes, H, W) scores.

    Each patch token, after the final norm, goes through one linear layer to ``p * p * classes``
    numbers: the scores of the token's own p x p pixels, laid out as ``patchify`` lays out pixels.
    """

    def __init__(self, classes: int, **vit: Any):
        super().__init__(**{**vit, "num_classes": 0, "global_pool": "token"})
        p = self.patch_embed.patch_size
        self.config.update(num_classes=classes, task="segmentation")
        self.head = nn.Linear(self.num_features, p * p * classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.forward_tokens(imgs))[:, 1:]  # (N, L, D), the cls token dropped
        scores = self.head(tokens)  # (N, L, p*p*K)
        p, (h, w) = self.patch_embed.patch_size, self.patch_embed.grid_size
        return rearrange(scores, "n (h w) (p q k) -> n k (h p) (w q)", h=h, w=w, p=p, q=p)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class, over all pixels of a batch."""
    return torch.bincount(classes * target.flatten() + pred.flatten(), minlength=classes * classes).view(
        classes, classes
    )


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each class, from a (K, K) confusion matrix (rows: true classes).

    IoU_c = TP_c / (TP_c + FP_c + FN_c): the pixels both call c, over those either calls c. A class
    that is neither present nor predicted has no IoU: NaN, left out of the mean.
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive  # predicted c + truly c - both
    return torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """The mean of :func:`iou_per_class` over the classes that occur (in % ), the paper's mIoU."""
    return 100 * iou_per_class(confusion).nanmean().item()


@torch.no_grad()
def measure_segmentation(
    predict: Callable, batches: Iterable, device: torch.device, autocast: Callable, classes: int
) -> dict[str, float]:
    """mIoU and pixel accuracy (%) and the mean cross-entropy per pixel, summed over all processes."""
    confusion = torch.zeros(classes, classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for images, targets in batches:
        with autocast():
            scores = predict(images)
        loss_sum += F.cross_entropy(scores.float(), targets, reduction="sum").double()
        confusion += confusion_matrix(scores.argmax(1), targets, classes)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(confusion)
        torch.distributed.all_reduce(loss_sum)
    pixels = max(confusion.sum().item(), 1)
    return {
        "miou": mean_iou(confusion.cpu()),
        "pixel_accuracy": 100 * confusion.diag().sum().item() / pixels,
        "loss": loss_sum.item() / pixels,
    }


def tokens_encoder(state_dict: dict[str, torch.Tensor], model: SegmentationViT) -> dict[str, torch.Tensor]:
    """The encoder weights of an MAE or a classifier checkpoint, for :class:`SegmentationViT`.

    An average-pooling classifier ends in ``fc_norm`` (applied to the pooled feature) rather than
    ``norm``: it serves as the final norm of every token. Heads and decoders are left out.
    """
    weights = dict(state_dict)
    if "norm.weight" not in weights and "fc_norm.weight" in weights:
        weights.update({"norm.weight": weights["fc_norm.weight"], "norm.bias": weights["fc_norm.bias"]})
    weights = encoder_state_dict({k: v for k, v in weights.items() if not k.startswith("fc_norm.")}, model)
    missing = sorted(set(model.state_dict()) - set(weights) - {"head.weight", "head.bias"})
    if missing:
        raise CheckpointError(f"the checkpoint holds no ViT encoder for this model; missing: {', '.join(missing[:6])}")
    return weights


def build(cfg: SegmentConfig, encoder_config: dict, weights: dict | None, classes: int) -> nn.Module:
    model = SegmentationViT(classes, **encoder_settings(encoder_config), drop_path=cfg.drop_path)
    if weights is not None:
        load_weights(model, tokens_encoder(weights, model), strict=False)
    return model


def datasets(cfg: SegmentConfig):
    size = builtin_source_size(cfg.image_size)
    if size != cfg.image_size:
        raise ConfigError(f"the built-in label maps come at 32 or 64 px; use --image-size {size}")
    train = BuiltinSegmentation("train", size, segmentation_transform(train=True))
    val = BuiltinSegmentation("test", size, segmentation_transform(train=False))
    return train, val, len(BuiltinSegmentation.classes)


def loss(cfg: SegmentConfig, classes: int) -> Callable[..., torch.Tensor]:
    def loss_fn(module: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(module(images).float(), targets)  # the mean over every pixel

    return loss_fn


SEGMENT = Recipe(
    datasets=datasets,
    build=build,
    optimizer=finetune_optimizer,
    loss=loss,
    measure=measure_segmentation,
    primary="miou",
    shown=("miou", "pixel_accuracy"),
)


def load_segmenter(path: str) -> SegmentationViT:
    """The trained network of a ``segment`` run (its ``model.safetensors``, or the ``model.pth`` of an
    older run), in eval mode."""
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config", {}).get("classifier") if isinstance(checkpoint.get("config"), dict) else None
    if not isinstance(config, dict) or config.get("task") != "segmentation":
        raise CheckpointError(
            f"{path} is not a segmentation model; give the model.safetensors that a `segment` run wrote"
        )
    classes, drop_path = config.get("num_classes"), config.get("drop_path", 0.0)
    try:  # a crafted config is refused before anything is built
        check_architecture(encoder_settings(config))
        need(
            type(classes) is int and 1 <= classes <= MAX_CLASSES,
            f"num_classes must be from 1 to {MAX_CLASSES}, got {classes!r}",
        )
        need(type(drop_path) in (int, float) and 0 <= drop_path < 1, f"drop_path must be in [0, 1), got {drop_path!r}")
    except ConfigError as e:
        raise CheckpointError(f"{path} holds a model config that does not build ({e})") from None
    model = SegmentationViT(classes, **encoder_settings(config), drop_path=drop_path)
    load_weights(model, state_dict_of(checkpoint))
    return model.eval()


def segment(cfg: SegmentConfig, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fine-tune a ViT (from a checkpoint's encoder, or random) to label pixels; returns the final metrics."""
    return train_classifier(cfg, SEGMENT, on_step)
