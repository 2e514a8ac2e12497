"""Lesson 10: does MAE scale, and does it transfer? The paper's numbers, and the course's miniatures.

The paper's Tables 3-7 and Figure 8 as data (fine-tuned accuracy, COCO box and mask AP, ADE20K
mIoU, per model size), and the figures of lesson 10: the paper's scaling and transfer results,
and what the course measured on the built-in data with its own commands (bigger encoders,
longer pretraining, fewer labels, segmentation).
"""

from __future__ import annotations

from typing import Any

import matplotlib
import torch

from ..data.builtin import BuiltinSegmentation
from ..data.transforms import denormalize
from ..figures import CourseFigure

SIZES = ("ViT-B", "ViT-L", "ViT-H")

# Table 3: ImageNet-1K fine-tuning top-1 (%) after pretraining on ImageNet-1K only; MAE 1600 epochs with
# normalized pixels. "ViT-H 448" is ViT-H fine-tuned at 448 px. From scratch: the paper's own recipe.
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "from scratch": {"ViT-B": 82.3, "ViT-L": 82.6, "ViT-H": 83.1},
    "DINO": {"ViT-B": 82.8},
    "MoCo v3": {"ViT-B": 83.2, "ViT-L": 84.1},
    "BEiT": {"ViT-B": 83.2, "ViT-L": 85.2},
    "MAE": {"ViT-B": 83.6, "ViT-L": 85.9, "ViT-H": 86.9, "ViT-H 448": 87.8},
}

# Table 4: COCO detection and instance segmentation, Mask R-CNN with a ViT + FPN backbone.
PAPER_TABLE4: dict[str, dict[str, dict[str, float]]] = {
    "AP box": {"supervised": {"ViT-B": 47.9, "ViT-L": 49.3}, "MoCo v3": {"ViT-B": 47.9, "ViT-L": 49.3},
               "BEiT": {"ViT-B": 49.8, "ViT-L": 53.3}, "MAE": {"ViT-B": 50.3, "ViT-L": 53.3}},
    "AP mask": {"supervised": {"ViT-B": 42.9, "ViT-L": 43.9}, "MoCo v3": {"ViT-B": 42.7, "ViT-L": 44.0},
                "BEiT": {"ViT-B": 44.4, "ViT-L": 47.1}, "MAE": {"ViT-B": 44.9, "ViT-L": 47.2}},
}  # fmt: skip

# Table 5: ADE20K semantic segmentation with UperNet, mIoU (%).
PAPER_TABLE5: dict[str, dict[str, float]] = {
    "supervised": {"ViT-B": 47.4, "ViT-L": 49.9},
    "MoCo v3": {"ViT-B": 47.3, "ViT-L": 49.1},
    "BEiT": {"ViT-B": 47.1, "ViT-L": 53.3},
    "MAE": {"ViT-B": 48.1, "ViT-L": 53.6},
}

# Table 6: transfer to classification, fine-tuned top-1 (%), and the previous best.
PAPER_TABLE6: dict[str, dict[str, float]] = {
    "iNat 2017": {"ViT-B": 70.5, "ViT-L": 75.7, "ViT-H": 79.3, "ViT-H 448": 83.4, "previous best": 75.4},
    "iNat 2018": {"ViT-B": 75.4, "ViT-L": 80.1, "ViT-H": 83.0, "ViT-H 448": 86.8, "previous best": 81.2},
    "iNat 2019": {"ViT-B": 80.5, "ViT-L": 83.4, "ViT-H": 85.7, "ViT-H 448": 88.3, "previous best": 84.1},
    "Places205": {"ViT-B": 63.9, "ViT-L": 65.8, "ViT-H": 65.9, "ViT-H 448": 66.8, "previous best": 66.0},
    "Places365": {"ViT-B": 57.9, "ViT-L": 59.4, "ViT-H": 59.8, "ViT-H 448": 60.3, "previous best": 58.0},
}

# Table 7: the target of the reconstruction, on ImageNet-1K (top-1), COCO (AP box) and ADE20K (mIoU).
PAPER_TABLE7: dict[str, dict[str, dict[str, float]]] = {
    "pixels": {"IN1K": {"ViT-B": 83.3, "ViT-L": 85.1, "ViT-H": 86.2}, "COCO": {"ViT-B": 49.5, "ViT-L": 52.8},
               "ADE20K": {"ViT-B": 48.0, "ViT-L": 51.8}},
    "normalized pixels": {"IN1K": {"ViT-B": 83.6, "ViT-L": 85.9, "ViT-H": 86.9}, "COCO": {"ViT-B": 50.3, "ViT-L": 53.3},
                          "ADE20K": {"ViT-B": 48.1, "ViT-L": 53.6}},
    "dVAE tokens": {"IN1K": {"ViT-B": 83.6, "ViT-L": 85.7, "ViT-H": 86.9}, "COCO": {"ViT-B": 50.3, "ViT-L": 53.2},
                    "ADE20K": {"ViT-B": 48.1, "ViT-L": 53.4}},
}  # fmt: skip


def paper_figure() -> CourseFigure:
    """Figure 8 (the gain over supervised pretraining grows with the model) and Tables 4-5 for ViT-L."""
    fig = CourseFigure(figsize=(11, 3.4), layout="constrained")
    scaling, coco, ade = fig.subplots(1, 3, width_ratios=(1.1, 1, 1))
    for name, style in (("MAE", "o-"), ("from scratch", "s--")):
        row = PAPER_TABLE3[name]
        scaling.plot(SIZES, [row[s] for s in SIZES], style, label=name if name == "MAE" else "supervised, IN1K")
    scaling.set(title="Figure 8: ImageNet-1K fine-tuning", ylabel="top-1 (%)")
    scaling.legend(fontsize=8)
    methods = ("supervised", "MoCo v3", "BEiT", "MAE")
    for ax, table, title in (
        (coco, PAPER_TABLE4["AP box"], "Table 4: COCO, AP box"),
        (ade, PAPER_TABLE5, "Table 5: ADE20K, mIoU"),
    ):
        for i, size in enumerate(("ViT-B", "ViT-L")):
            xs = [j + 0.4 * i for j in range(len(methods))]
            bars = ax.bar(xs, [table[m][size] for m in methods], width=0.38, label=size, color=f"C{i}")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks([j + 0.2 for j in range(len(methods))], methods, fontsize=8)
        ax.set_ylim(40, 56)
        ax.set(title=title)
        ax.legend(fontsize=8, loc="upper left")
    return fig


def model_size_figure(results: dict[str, Any]) -> CourseFigure:
    """The paper's Figure 8 (left) beside the course's miniature (right): fine-tuned top-1 from the MAE
    and from scratch, same budget, against the size of the encoder.

    ``results`` is a ``sweep`` over the encoder's ``embed_dim`` or ``depth`` with the stages
    ``finetune`` and ``scratch`` (``data/results/figure8.json``).
    """
    fig = CourseFigure(figsize=(11, 3.6), layout="constrained")
    paper, ours = fig.subplots(1, 2)
    for name, label, style in (("MAE", "MAE, then fine-tuned", "o-"), ("from scratch", "from scratch", "s--")):
        ys = [PAPER_TABLE3[name][s] for s in SIZES]
        paper.plot(SIZES, ys, style, label=label)
    for size in SIZES:
        gain = PAPER_TABLE3["MAE"][size] - PAPER_TABLE3["from scratch"][size]
        paper.annotate(
            f"+{gain:.1f}",
            (size, PAPER_TABLE3["MAE"][size]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    paper.set(title="the paper: ViT on ImageNet-1K (Figure 8)", ylabel="top-1 (%)", xlabel="model")
    paper.legend(fontsize=8, loc="lower right")
    runs = results["runs"]
    values = [v for v in results["values"] if "finetune" in runs.get(v, {}) and "scratch" in runs.get(v, {})]
    width = results["ablation"]
    for stage, label, style in (
        ("finetune", "MAE, then fine-tuned", "o-"),
        ("scratch", "from scratch, same budget", "s--"),
    ):
        ours.plot([int(v) for v in values], [runs[v][stage]["top1"] for v in values], style, label=label)
    for v in values:
        gain = runs[v]["finetune"]["top1"] - runs[v]["scratch"]["top1"]
        ours.annotate(
            f"{gain:+.1f}",
            (int(v), runs[v]["finetune"]["top1"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ticks = [f"{v}\n({runs[v]['finetune']['trained_parameters'] / 1e6:.2f}M)" for v in values]
    ours.set_xticks([int(v) for v in values], ticks)
    ours.set(
        title="this course: mini MAE on the built-in data",
        ylabel="top-1 (%)",
        xlabel=f"encoder {'width' if width == 'embed_dim' else 'depth'} (parameters)",
    )
    ours.axhline(100 / 10, color="0.5", ls=":", lw=1, label="chance")
    ours.legend(fontsize=8, loc="center right")
    return fig


def label_efficiency_figure(results: dict[int, dict[str, Any]], total: int) -> CourseFigure:
    """Top-1 of fine-tuning from the MAE and from scratch against the number of labelled images.

    ``results`` maps a number of labelled training images to an ``evaluate`` results dict with the
    runs ``finetune`` and ``finetune_scratch``; ``total`` is the size of the full training set.
    """
    counts = sorted(results)
    fig = CourseFigure(figsize=(6.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for run, label, style in (
        ("finetune", "fine-tuned from the MAE", "o-"),
        ("finetune_scratch", "trained from scratch", "s--"),
    ):
        ys = [results[n]["runs"][run]["top1"] for n in counts]
        ax.plot(counts, ys, style, label=label)
        for n, y in zip(counts, ys, strict=True):
            ax.annotate(f"{y:.1f}", (n, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.axhline(100 / 10, color="0.5", ls=":", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xticks(counts, [f"{n:,}\n({100 * n / total:g}%)" for n in counts])
    ax.set(xlabel="labelled training images", ylabel="top-1 (%)", title="fewer labels: the MAE against scratch")
    ax.legend(fontsize=8)
    return fig


def segmentation_figure(results: dict[str, dict[str, Any]]) -> CourseFigure:
    """mIoU and pixel accuracy of ``segment`` runs, e.g. ``{"MAE": metrics, "supervised": ..., "scratch": ...}``."""
    names = list(results)
    fig = CourseFigure(figsize=(8, 3), layout="constrained")
    axes = fig.subplots(1, 2)
    colors = ["C0" if "mae" in n.lower() else ("C1" if "supervised" in n.lower() else "0.6") for n in names]
    for ax, key, title in zip(axes, ("miou", "pixel_accuracy"), ("mIoU (%)", "pixel accuracy (%)"), strict=True):
        bars = ax.bar(names, [results[n][key] for n in names], color=colors)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set(title=title)
        ax.tick_params(axis="x", labelsize=8)
    return fig


def class_colors(classes: int) -> torch.Tensor:
    """(classes, 3) colours in [0, 1]: black for the background (class 0), distinct hues for the rest."""
    palette = matplotlib.colormaps["tab10"]
    colors = [(0.0, 0.0, 0.0)] + [palette(i % 10)[:3] for i in range(classes - 1)]
    return torch.tensor(colors)


def segmentation_examples(
    images: torch.Tensor, truths: torch.Tensor, predictions: dict[str, torch.Tensor], columns: int = 6
) -> CourseFigure:
    """A grid: the images, their true label maps, then one row of predicted maps per model.

    Args:
        images: (N, 3, H, W) normalized images.
        truths: (N, H, W) true class of every pixel.
        predictions: model name -> (N, H, W) predicted classes.
    """
    n = min(columns, images.shape[0])
    colors = class_colors(len(BuiltinSegmentation.classes))
    pixels = denormalize(images[:n]).clamp(0, 1).permute(0, 2, 3, 1)  # (n, H, W, 3)
    rows = [("image", list(pixels)), ("truth", [colors[truths[i]] for i in range(n)])]
    rows += [(name, [colors[pred[i]] for i in range(n)]) for name, pred in predictions.items()]
    fig = CourseFigure(figsize=(1.4 * n + 1.2, 1.45 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, pictures) in enumerate(rows):
        for c, picture in enumerate(pictures):
            axes[r, c].imshow(picture.numpy(), interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=9)
    return fig
