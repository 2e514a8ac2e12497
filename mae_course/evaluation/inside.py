"""Lesson 07: looking inside an encoder, beyond its accuracy.

Three views of what an encoder computes, for any ViT of the course (an MAE's encoder, a classifier
trained with labels, random weights), so that they can be set side by side:

* :func:`cls_attention`: where the cls token looks, in the last block (DINO's picture): the softmax
  weights of its query over the patch tokens, per head;
* :func:`pca_colours`: the patch tokens' three main directions of variation as red, green and blue,
  one PCA fitted over all the patches shown, so that equal colours mean similar tokens;
* :func:`nearest_neighbours` and :func:`neighbour_agreement`: which images an encoder's pooled
  features put next to each other, and how often those share the query's class (a k-NN check that
  needs no training).

:func:`load_encoder` builds the ViT from any of the three sources; :func:`inside_figure` and
:func:`neighbours_figure` draw the views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from ..checkpoint import load_checkpoint, state_dict_of
from ..data.transforms import denormalize
from ..errors import CheckpointError
from ..figures import CourseFigure
from ..model.vit import VisionTransformer, load_mae_encoder, vit_from_mae


def load_encoder(source: str | Path | None, mae_config: Mapping[str, Any] | None = None, seed: int = 0):
    """A ViT encoder in eval mode, from one of three sources.

    Args:
        source: an MAE checkpoint (its encoder is loaded), the ``model.safetensors`` of a
            ``finetune`` run (the classifier, trained with labels), or None for random weights.
        mae_config: the MAE config whose architecture random weights take (needed when source is None).
        seed: the seed of the random weights.
    """
    if source is None:
        if mae_config is None:
            raise ValueError("random weights need the architecture: give mae_config (e.g. an MAE's model.config)")
        torch.manual_seed(seed)
        return vit_from_mae(mae_config, num_classes=0, global_pool="avg").eval()
    checkpoint = load_checkpoint(str(source))
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    weights = state_dict_of(checkpoint)
    if isinstance(config.get("classifier"), dict) and "task" not in config["classifier"]:
        vit = VisionTransformer(**config["classifier"])
        vit.load_state_dict(weights)
        return vit.eval()
    if isinstance(config.get("model"), dict):
        vit = vit_from_mae(config["model"], num_classes=0, global_pool="avg")
        load_mae_encoder(vit, weights)
        return vit.eval()
    raise CheckpointError(f"{source} is neither an MAE checkpoint nor a fine-tuned classifier of the course")


def _tokens_before(vit: VisionTransformer, imgs: torch.Tensor, block: int) -> torch.Tensor:
    """(N, 1 + L, D): the tokens that enter block ``block`` (the embedding and the blocks before it)."""
    x = vit.patch_embed(imgs) + vit.pos_embed[:, 1:]
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls.to(x.dtype), x], dim=1)
    for b in vit.blocks[:block]:
        x = b(x)
    return x


@torch.no_grad()
def cls_attention(vit: VisionTransformer, imgs: torch.Tensor, block: int = -1, include_cls: bool = False):
    """The attention weights of the cls token's query in one block (the last by default).

    Args:
        imgs: (N, C, H, W) normalized images.
        include_cls: keep the weight the cls token gives itself (then each row sums to 1).

    Returns:
        (N, heads, L) weights over the patch tokens in grid order, or (N, heads, 1 + L) with the
        cls token's own first.
    """
    index = block % len(vit.blocks)
    layer = vit.blocks[index]
    h = layer.norm1(_tokens_before(vit, imgs, index))
    q, k, _ = rearrange(layer.attn.qkv(h), "n t (three h d) -> three n h t d", three=3, h=layer.attn.num_heads)
    weights = (q[:, :, :1] @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1)[:, :, 0]  # (N, heads, 1 + L)
    return weights if include_cls else weights[:, :, 1:]


@torch.no_grad()
def patch_features(vit: VisionTransformer, imgs: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) normalized images -> (N, L, D): every patch token after the last block."""
    return vit.forward_tokens(imgs)[:, 1:]


def pca_colours(features: torch.Tensor, low: float = 0.01, high: float = 0.99) -> torch.Tensor:
    """The three main directions of variation of all the tokens, as colours.

    Args:
        features: (N, L, D) patch tokens (at least 3 tokens, D >= 3).
        low, high: each component is scaled so that these quantiles map to 0 and 1, then clipped.

    Returns:
        (N, L, 3) values in [0, 1]: component k of each token is colour channel k. One PCA over
        every token given, so colours compare across images. Each component's sign is fixed so that
        its largest loading is positive: the same features always give the same colours.
    """
    if features.ndim != 3 or features.shape[0] * features.shape[1] < 3 or features.shape[2] < 3:
        raise ValueError(
            f"pca_colours needs (N, L, D) features with at least 3 tokens and D >= 3, got {tuple(features.shape)}"
        )
    n, length, dim = features.shape
    x = features.reshape(n * length, dim).double()
    x = x - x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    components = vh[:3]
    signs = components.gather(1, components.abs().argmax(dim=1, keepdim=True)).sign()
    projected = x @ (components * signs).T  # (N*L, 3)
    lo, hi = torch.quantile(projected, low, dim=0), torch.quantile(projected, high, dim=0)
    colours = ((projected - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)
    return colours.reshape(n, length, 3).float()


@torch.no_grad()
def pooled_features(vit: VisionTransformer, imgs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, C, H, W) -> (N, D): the encoder's pooled features (the probe's), computed in batches."""
    return torch.cat([vit.forward_features(chunk) for chunk in imgs.split(batch_size)])


def nearest_neighbours(queries: torch.Tensor, gallery: torch.Tensor, k: int, exclude: torch.Tensor | None = None):
    """The ``k`` gallery items most similar to each query, by cosine similarity, most similar first.

    Args:
        queries: (Q, D); gallery: (G, D).
        exclude: (Q,) the gallery index to leave out for each query (the query itself), or None.

    Returns:
        (Q, k) gallery indices.
    """
    available = gallery.shape[0] - (exclude is not None)
    if not 1 <= k <= available:
        raise ValueError(f"k must be between 1 and {available} (the gallery's size), got {k}")
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T  # (Q, G)
    if exclude is not None:
        similarity[torch.arange(len(exclude)), exclude] = -float("inf")
    return similarity.topk(k, dim=1).indices


def neighbour_agreement(features: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """How often, in %, the ``k`` nearest other images of an image share its class (leave one out).

    A k-NN view of the same question as the linear probe, with nothing trained: an encoder whose
    features group images by class scores high; chance is the share of each class.
    """
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature vectors but {len(labels)} labels")
    idx = nearest_neighbours(features, features, k, exclude=torch.arange(len(features)))
    return 100.0 * (labels[idx] == labels[:, None]).float().mean().item()


def _as_map(values: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(L,) or (L, 3) per-patch values -> an image of ``size`` (nearest, one block per patch)."""
    image = rearrange(values.reshape(*grid, -1), "h w c -> 1 c h w")
    return F.interpolate(image, size=size, mode="nearest")[0]


def inside_figure(encoders: Mapping[str, VisionTransformer], imgs: torch.Tensor) -> CourseFigure:
    """For each image (columns): the image, then for each encoder its cls token's attention in the
    last block (the mean over heads, brighter = more weight) and its patch tokens' PCA colours.

    Args:
        encoders: name -> ViT, in the order of the rows.
        imgs: (N, C, H, W) normalized images.
    """
    n, rows = imgs.shape[0], 1 + 2 * len(encoders)
    fig = CourseFigure(figsize=(1.45 * n + 1.2, 1.45 * rows), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False)
    pixels = denormalize(imgs).clamp(0, 1)
    size = tuple(imgs.shape[-2:])
    for col in range(n):
        axes[0, col].imshow(pixels[col].permute(1, 2, 0).numpy())
    axes[0, 0].set_ylabel("image", fontsize=8)
    for r, (name, vit) in enumerate(encoders.items()):
        grid = vit.patch_embed.grid_size  # (rows, columns)
        attention = cls_attention(vit, imgs).mean(dim=1)  # (N, L)
        colours = pca_colours(patch_features(vit, imgs))  # one PCA per encoder, over all the images
        for col in range(n):
            weights = attention[col] / attention[col].max()
            axes[1 + 2 * r, col].imshow(pixels[col].permute(1, 2, 0).numpy())
            axes[1 + 2 * r, col].imshow(
                _as_map(weights, grid, size)[0].numpy(), cmap="inferno", alpha=0.75, vmin=0, vmax=1
            )
            axes[2 + 2 * r, col].imshow(_as_map(colours[col], grid, size).permute(1, 2, 0).numpy())
        axes[1 + 2 * r, 0].set_ylabel(f"{name}\ncls attention", fontsize=8)
        axes[2 + 2 * r, 0].set_ylabel(f"{name}\nPCA of patches", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def neighbours_figure(
    encoders: Mapping[str, VisionTransformer],
    imgs: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    queries: Sequence[int],
    k: int = 5,
) -> CourseFigure:
    """For each encoder and query image: the query, then its ``k`` nearest neighbours among ``imgs``
    (by cosine similarity of the pooled features), each titled with its class, green when it is the
    query's. Each encoder's row is labelled with its :func:`neighbour_agreement` over all of ``imgs``.
    """
    rows = len(encoders) * len(queries)
    fig = CourseFigure(figsize=(1.3 * (k + 1) + 1.4, 1.55 * rows), layout="constrained")
    axes = fig.subplots(rows, k + 1, squeeze=False)
    pixels = denormalize(imgs).clamp(0, 1)
    picked = torch.as_tensor(list(queries))
    for e, (name, vit) in enumerate(encoders.items()):
        features = pooled_features(vit, imgs)
        agreement = neighbour_agreement(features, labels, k)
        found = nearest_neighbours(features[picked], features, k, exclude=picked)
        for q, query in enumerate(picked.tolist()):
            row = axes[e * len(queries) + q]
            for j, index in enumerate([query, *found[q].tolist()]):
                row[j].imshow(pixels[index].permute(1, 2, 0).numpy())
                same = labels[index] == labels[query]
                row[j].set_title(
                    classes[labels[index]], fontsize=7, color="black" if j == 0 else ("green" if same else "red")
                )
                row[j].set_xticks([])
                row[j].set_yticks([])
            row[0].set_ylabel(f"{name}\n{k}-NN agree {agreement:.0f}%", fontsize=8)
    return fig
