"""Lessons 00-05: the course's explanatory figures: patch grids, masks, positional similarity,
the paper's Figure 1 (the MAE architecture) drawn with a real image, and loss curves.

Every function returns a matplotlib ``Figure`` (no global pyplot state), which Jupyter
displays when it is the value of a cell; :func:`save_figure` writes one to a file atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import matplotlib.patheffects as effects
import torch
import torch.nn.functional as F
from einops import repeat
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .model.patches import grid_shape, patchify, unpatchify
from .safe_files import atomic_write

_OUTLINE = [effects.withStroke(linewidth=2, foreground="black")]


class CourseFigure(Figure):
    """A matplotlib Figure that shows itself in any Jupyter front end (JupyterLab, Colab, VS
    Code), with no pyplot and no ``%matplotlib`` magic: IPython displays its ``_repr_png_``."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write a figure as a PNG, atomically (a reader never sees half a picture)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def loss_curve_figure(steps: list[int], losses: list[float], title: str = "pretraining loss") -> CourseFigure:
    """The training loss against the optimizer step."""
    fig = CourseFigure(figsize=(5, 3), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, losses)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (masked patches)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def _hwc(img: torch.Tensor):
    """(C, H, W) in [0, 1] -> an (H, W, C) array for imshow."""
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def image_row(images: Sequence[torch.Tensor], titles: Sequence[str] | None = None, size: float = 2.4) -> Figure:
    """Images side by side, each (C, H, W) in [0, 1], with optional titles."""
    fig = CourseFigure(figsize=(size * len(images), size + 0.4), layout="constrained")
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for i, (ax, img) in enumerate(zip(axes, images, strict=True)):
        ax.imshow(_hwc(img), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[i], fontsize=10)
    return fig


def patch_grid_figure(img: torch.Tensor, patch_size: int, numbers: bool = True, size: float = 5.0) -> Figure:
    """The image with its patch grid drawn over it and, optionally, each token's index."""
    _, h, w = img.shape
    rows, cols = h // patch_size, w // patch_size
    fig = CourseFigure(figsize=(size, size * h / w), layout="constrained")
    ax = fig.subplots()
    ax.imshow(_hwc(img), interpolation="nearest")
    for r in range(1, rows):
        ax.axhline(r * patch_size - 0.5, color="white", lw=0.8)
    for c in range(1, cols):
        ax.axvline(c * patch_size - 0.5, color="white", lw=0.8)
    if numbers:
        fontsize = max(5, min(11, 150 / max(rows, cols)))
        for r in range(rows):
            for c in range(cols):
                ax.text(
                    (c + 0.5) * patch_size - 0.5,
                    (r + 0.5) * patch_size - 0.5,
                    str(r * cols + c),
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=fontsize,
                    path_effects=_OUTLINE,
                )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{rows} x {cols} = {rows * cols} patches of {patch_size} x {patch_size} pixels", fontsize=10)
    return fig


def patch_sequence_figure(img: torch.Tensor, patch_size: int, count: int = 16) -> Figure:
    """The first ``count`` patches of an image, laid out as the sequence the Transformer reads."""
    tokens = patchify(img.unsqueeze(0), patch_size)[0, :count]  # (count, p*p*C)
    tiles = unpatchify(tokens.unsqueeze(1), patch_size, (1, 1))  # (count, C, p, p)
    fig = CourseFigure(figsize=(0.75 * count, 1.2), layout="constrained")
    axes = fig.subplots(1, count, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.imshow(_hwc(tiles[i]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(i), fontsize=8)
    return fig


def masked_image(img: torch.Tensor, mask: torch.Tensor, patch_size: int, fill: float = 0.5) -> torch.Tensor:
    """(C, H, W) image with the removed patches (``mask`` (L,) == 1) painted grey."""
    _, h, w = img.shape
    grid = (h // patch_size, w // patch_size)
    keep = 1 - unpatchify(repeat(mask.float()[None], "n l -> n l d", d=patch_size * patch_size), patch_size, grid)
    return img * keep[0] + fill * (1 - keep[0])


def pos_embed_similarity_figure(pos_embed: torch.Tensor, grid_size: int | tuple[int, int], size: float = 6.0) -> Figure:
    """For every patch position, the cosine similarity of its positional code to all others.

    Args:
        pos_embed: (1, 1 + L, D) table with a cls row first, or (1, L, D) without.
    """
    table = pos_embed[0]
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    if table.shape[0] == rows * cols + 1:
        table = table[1:]
    grid_shape(table.shape[0], (rows, cols))
    sim = F.cosine_similarity(table[:, None, :], table[None, :, :], dim=-1)  # (L, L)
    fig = CourseFigure(figsize=(size, size * rows / cols))
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(wspace=0.08, hspace=0.08))
    low = float(sim.min())  # one colour scale for all maps, stretched to the values that occur
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        image = ax.imshow(sim[i].reshape(rows, cols).numpy(), cmap="viridis", vmin=low, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity")
    fig.suptitle("map (r, c): how similar the code of position (r, c) is to every position's code", fontsize=10)
    return fig


def mae_architecture_figure(img: torch.Tensor, patch_size: int, mask: torch.Tensor) -> Figure:
    """The paper's Figure 1, drawn from a real image: masked input -> encoder on the visible
    patches only -> encoded tokens plus mask tokens, unshuffled -> decoder -> target.

    Args:
        img: (C, H, W) in [0, 1].
        mask: (L,) 1 for removed patches.
    """
    _, h, w = img.shape
    rows, cols = h // patch_size, w // patch_size
    tiles = unpatchify(patchify(img[None], patch_size)[0][:, None], patch_size, (1, 1))  # (L, C, p, p)
    visible = (mask == 0).nonzero().flatten().tolist()

    fig = CourseFigure(figsize=(13, 4.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 130)
    ax.set_ylim(0, 46)
    ax.axis("off")

    def picture(image, x, y, size, border="none"):
        ax.imshow(_hwc(image), extent=(x, x + size, y, y + size), interpolation="nearest", zorder=2)
        if border != "none":
            ax.add_patch(
                FancyBboxPatch((x, y), size, size, boxstyle="square,pad=0", fill=False, ec=border, lw=1, zorder=3)
            )

    def arrow(x0, x1, y=21):
        ax.add_patch(FancyArrowPatch((x0, y), (x1, y), arrowstyle="-|>", mutation_scale=14, color="0.3", lw=1.2))

    def block(x, width, label, color):
        ax.add_patch(FancyBboxPatch((x, 6), width, 30, boxstyle="round,pad=0.4", fc=color, ec="0.25", lw=1.2))
        ax.text(x + width / 2, 21, label, ha="center", va="center", rotation=90, fontsize=13)

    # input, masked
    size = 24
    picture(masked_image(img, mask, patch_size, fill=0.85), 2, 9, size)
    ax.text(14, 36, "input\n(75% of patches removed)", ha="center", fontsize=10)
    arrow(27, 31)
    # the visible patches, as a sequence
    tile = min(30 / len(visible), 2.6)
    top = 21 + tile * len(visible) / 2
    for i, index in enumerate(visible):
        picture(tiles[index], 32, top - (i + 1) * tile, tile * 0.92)
    ax.text(33.3, top + 1.2, f"{len(visible)} visible\npatches", ha="center", fontsize=9)
    arrow(35.5, 39)
    block(40, 8, "encoder", "#cfe3f7")
    arrow(49, 53)
    # encoded visible tokens
    for i in range(len(visible)):
        ax.add_patch(
            FancyBboxPatch(
                (54, top - (i + 1) * tile), tile * 0.85, tile * 0.85, boxstyle="square,pad=0", fc="#3b7dd8", ec="none"
            )
        )
    ax.text(55.2, top + 1.2, "encoded", ha="center", fontsize=9)
    arrow(57, 61)
    # full set of tokens in grid order: encoded (blue) and mask tokens (grey)
    cell = 24 / max(rows, cols)
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        color = "#3b7dd8" if mask[index] == 0 else "0.78"
        ax.add_patch(
            FancyBboxPatch(
                (62 + c * cell, 33 - (r + 1) * cell),
                cell * 0.85,
                cell * 0.85,
                boxstyle="square,pad=0",
                fc=color,
                ec="none",
            )
        )
    ax.text(74, 36, "+ one shared mask token (grey)\nper removed patch, unshuffled", ha="center", fontsize=10)
    arrow(87, 91)
    block(92, 6, "decoder", "#f7dccf")
    arrow(99, 103)
    picture(img, 104, 9, size)
    ax.text(116, 36, "target: the pixels\nof the removed patches", ha="center", fontsize=10)
    ax.text(
        65,
        1.5,
        "The encoder sees only the visible quarter of the patches; the small decoder, used only in "
        "pretraining, sees them all.",
        ha="center",
        fontsize=10,
        style="italic",
    )
    return fig
