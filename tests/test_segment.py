"""Segmentation, lesson 10's dense prediction in miniature: the metric by hand, the head's pixel
layout, and the job from an MAE encoder, a classifier's encoder, or scratch."""

import json

import pytest
import torch

from mae_course import build_model
from mae_course.checkpoint import atomic_save
from mae_course.cli import main
from mae_course.evaluation.finetune import FinetuneConfig, finetune
from mae_course.evaluation.segment import (
    SegmentationViT,
    SegmentConfig,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    segment,
)

QUICK = dict(subset=128, val_subset=64, batch_size=32, epochs=1, device="cpu", log_every=1)


def test_iou_by_hand():
    # rows: true class, columns: predicted. Class 0: 8 right, 2 predicted as 1; class 1: 3 right, 1 as 0;
    # class 2: never present, never predicted.
    confusion = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    iou = iou_per_class(confusion)
    assert iou[0].item() == pytest.approx(8 / (8 + 2 + 1)) and iou[1].item() == pytest.approx(3 / (3 + 1 + 2))
    assert torch.isnan(iou[2]) and mean_iou(confusion) == pytest.approx(100 * (8 / 11 + 3 / 6) / 2)
    pred, target = torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]])
    assert confusion_matrix(pred, target, 3).tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_each_token_labels_its_own_patch():
    model = SegmentationViT(3, img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(4 * 4 * 3, dtype=torch.float32))  # (p, q, class) in patchify order
    scores = model(torch.randn(2, 3, 16, 16))
    assert scores.shape == (2, 3, 16, 16)
    assert scores[0, 2, 1, 3].item() == (1 * 4 + 3) * 3 + 2  # pixel (1, 3) of every patch, class 2
    assert torch.equal(scores[:, :, :4, :4], scores[:, :, 4:8, 8:12])


def test_segmentation_from_an_mae_a_classifier_or_scratch(tmp_path, mini_mae_checkpoint):
    from_mae = segment(SegmentConfig(output_dir=str(tmp_path / "mae"), checkpoint=str(mini_mae_checkpoint), **QUICK))
    assert 0 <= from_mae["miou"] <= from_mae["pixel_accuracy"] <= 100 and from_mae["data"]["classes"] == 11
    log = [json.loads(line) for line in (tmp_path / "mae" / "log.jsonl").read_text().splitlines()]
    assert {"val_miou", "val_pixel_accuracy", "val_loss"} <= set(log[-1])
    finetune(
        FinetuneConfig(output_dir=str(tmp_path / "sup"), **{**QUICK, "val_subset": None})
    )  # supervised, from scratch
    from_classifier = segment(
        SegmentConfig(output_dir=str(tmp_path / "seg"), checkpoint=str(tmp_path / "sup" / "model.safetensors"), **QUICK)
    )
    scratch = segment(SegmentConfig(output_dir=str(tmp_path / "scratch"), **QUICK))
    assert from_classifier["miou"] != scratch["miou"]


def test_a_checkpoint_without_an_encoder_and_other_data_are_refused(tmp_path, capsys):
    path = tmp_path / "decoder_only.pth"
    model = build_model("mae_vit_mini_patch4_32")
    atomic_save(
        {
            "model": {k: v for k, v in model.state_dict().items() if k.startswith("decoder")},
            "config": {"model": model.config},
        },
        path,
    )
    assert main(["segment", "--checkpoint", str(path), "--output-dir", str(tmp_path / "a"), "--subset", "64"]) == 2
    assert "holds no ViT encoder" in capsys.readouterr().err
    assert main(["segment", "--data", "cifar10", "--output-dir", str(tmp_path / "b")]) == 2
    assert "only the built-in data has them" in capsys.readouterr().err


def test_a_segment_run_s_model_loads_back_and_predicts_what_it_measured(tmp_path, mini_mae_checkpoint):
    from mae_course.errors import CheckpointError
    from mae_course.evaluation.segment import datasets, load_segmenter

    cfg = SegmentConfig(
        checkpoint=str(mini_mae_checkpoint),
        epochs=1,
        subset=64,
        val_subset=32,
        batch_size=32,
        output_dir=str(tmp_path / "seg"),
        device="cpu",
    )
    metrics = segment(cfg)
    model = load_segmenter(str(tmp_path / "seg" / "model.safetensors"))
    _, val, classes = datasets(cfg)
    images, targets = (torch.stack(t) for t in zip(*(val[i] for i in range(32)), strict=True))  # the first 32
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert mean_iou(confusion_matrix(predicted, targets, classes)) == pytest.approx(metrics["miou"], abs=1e-4)
    with pytest.raises(CheckpointError, match="is not a segmentation model"):
        load_segmenter(str(mini_mae_checkpoint))
