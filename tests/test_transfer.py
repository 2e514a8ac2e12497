"""Lesson 10's figures: the paper's scaling and transfer numbers, and the course's miniatures."""

import matplotlib
import torch

from mae_course.data.builtin import BuiltinSegmentation
from mae_course.experiments.transfer import (
    PAPER_TABLE3,
    PAPER_TABLE4,
    PAPER_TABLE5,
    class_colors,
    label_efficiency_figure,
    model_size_figure,
    paper_figure,
    segmentation_examples,
    segmentation_figure,
)


def _bar_heights(ax):
    return [round(p.get_height(), 1) for p in ax.patches]


def test_the_paper_figure_shows_figure8_and_the_vit_l_transfer_gains():
    fig = paper_figure()
    scaling, coco, ade = fig.axes
    mae, scratch = (list(line.get_ydata()) for line in scaling.lines)
    assert mae == [83.6, 85.9, 86.9] and scratch == [82.3, 82.6, 83.1]
    # ViT-L's gains over supervised pretraining, as the paper states them: +4.0 AP box, +3.7 mIoU
    assert round(PAPER_TABLE4["AP box"]["MAE"]["ViT-L"] - PAPER_TABLE4["AP box"]["supervised"]["ViT-L"], 1) == 4.0
    assert round(PAPER_TABLE5["MAE"]["ViT-L"] - PAPER_TABLE5["supervised"]["ViT-L"], 1) == 3.7
    assert _bar_heights(ade) == [47.4, 47.3, 47.1, 48.1, 49.9, 49.1, 53.3, 53.6]  # B bars, then L bars
    assert max(PAPER_TABLE3["MAE"].values()) == 87.8


def test_label_efficiency_plots_both_runs_at_each_count():
    results = {
        n: {"runs": {"finetune": {"top1": 20.0 + i}, "finetune_scratch": {"top1": 10.0 + i}}}
        for i, n in enumerate((100, 1000, 10000))
    }
    ax = label_efficiency_figure(results, total=10000).axes[0]
    ours, scratch = ax.lines[:2]
    assert list(ours.get_xdata()) == [100, 1000, 10000] and list(ours.get_ydata()) == [20.0, 21.0, 22.0]
    assert list(scratch.get_ydata()) == [10.0, 11.0, 12.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100\n(1%)", "1,000\n(10%)", "10,000\n(100%)"]


def test_segmentation_figures():
    fig = segmentation_figure(
        {"from MAE": {"miou": 60.0, "pixel_accuracy": 90.0}, "from scratch": {"miou": 30.0, "pixel_accuracy": 80.0}}
    )
    assert _bar_heights(fig.axes[0]) == [60.0, 30.0] and _bar_heights(fig.axes[1]) == [90.0, 80.0]
    named = segmentation_figure(
        {n: {"miou": 1.0, "pixel_accuracy": 1.0} for n in ("from mae", "from supervised", "from scratch")}
    )
    mae, supervised, scratch = (bar.get_facecolor() for bar in named.axes[0].patches)
    assert mae == matplotlib.colors.to_rgba("C0") and supervised == matplotlib.colors.to_rgba("C1") != scratch
    colors = class_colors(len(BuiltinSegmentation.classes))
    assert (
        colors.shape == (11, 3) and colors[0].tolist() == [0, 0, 0] and len({tuple(c) for c in colors.tolist()}) == 11
    )
    images, truths = torch.zeros(3, 3, 8, 8), torch.randint(0, 11, (3, 8, 8))
    grid = segmentation_examples(images, truths, {"predicted": truths, "other": truths})
    assert len(grid.axes) == 4 * 3  # image, truth and two predictions, three columns
    assert [grid.axes[i * 3].get_ylabel() for i in range(4)] == ["image", "truth", "predicted", "other"]


def test_figure8_draws_the_paper_beside_the_course_with_the_gains():
    def run(mae, scratch, params):
        return {
            "finetune": {"top1": mae, "trained_parameters": params},
            "scratch": {"top1": scratch, "trained_parameters": params},
        }

    results = {
        "ablation": "embed_dim",
        "values": ["64", "128", "192"],
        "runs": {"64": run(40.0, 20.0, 320_000), "128": run(47.0, 19.6, 1_205_898), "192": run(50.0, 21.0, 2_700_000)},
    }
    fig = model_size_figure(results)
    paper, ours = fig.axes
    assert [list(line.get_ydata()) for line in paper.lines] == [[83.6, 85.9, 86.9], [82.3, 82.6, 83.1]]
    assert [t.get_text() for t in paper.texts] == ["+1.3", "+3.3", "+3.8"]
    assert [list(line.get_ydata()) for line in ours.lines[:2]] == [[40.0, 47.0, 50.0], [20.0, 19.6, 21.0]]
    assert [t.get_text() for t in ours.texts] == ["+20.0", "+27.4", "+29.0"]
    assert [t.get_text() for t in ours.get_xticklabels()] == ["64\n(0.32M)", "128\n(1.21M)", "192\n(2.70M)"]
    assert "width" in ours.get_xlabel()
