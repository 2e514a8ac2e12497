"""Checks for lesson 10: the intersection over union of each class, from a confusion matrix."""

from __future__ import annotations

import math

import torch

from ..evaluation.segment import iou_per_class as ref_iou_per_class
from ._core import call, exercise, expect_shape, expect_tensor, fail
from ._messages import define, say

MESSAGES = define(
    {
        "iou_per_class.checked": "TP / (row + column - TP) per class, NaN for a class that is neither present nor "
        "predicted",
        "iou_per_class.dense": "a 4-class matrix",
        "iou_per_class.never_predicted": "a 3-class matrix where class 2 is never predicted",
        "iou_per_class.absent": "a 5-class matrix where class 3 is absent and never predicted",
        "iou_per_class.never_true": "a 4-class matrix where class 1 is predicted but never true",
        "iou_per_class.recall": "iou_per_class: divides by the pixels that truly are c (the row): that is the recall, not "
        "the IoU; the union also holds the pixels wrongly predicted as c",
        "iou_per_class.precision": "iou_per_class: divides by the pixels predicted as c (the column): that is the "
        "precision, not the IoU; the union also holds the pixels of c that were missed",
        "iou_per_class.counted_twice": "iou_per_class: counts the pixels both call c twice: the union is row + column "
        "minus the diagonal, which the row and the column both contain",
        "iou_per_class.dice": "iou_per_class: computes the Dice score 2TP / (row + column); the IoU is TP / (row + column "
        "- TP)",
        "iou_per_class.a_tensor": "a tensor of one IoU per class",
        "iou_per_class.shape_hint": "one IoU per class for {case}",
        "iou_per_class.integers": "iou_per_class: returned {dtype} values; an IoU is a fraction: convert the counts to "
        "float first (integer division rounds every IoU below 1 down to 0)",
        "iou_per_class.absent_not_nan": "iou_per_class: on {case}, class {c} is neither present nor predicted, and its "
        "IoU is {shown}; with nothing to measure it must be NaN, so that the mean IoU "
        "leaves it out (a 0 would pull the mean down, a 1 would lift it)",
        "iou_per_class.only_predicted": "predicted but never true",
        "iou_per_class.false_positives": "the {count} pixels wrongly predicted as it (false positives)",
        "iou_per_class.only_true": "true but never predicted",
        "iou_per_class.all_missed": "its {count} pixels, all missed",
        "iou_per_class.nan_means_absent": " A NaN would leave them out of the mean IoU; NaN is only for a class neither "
        "present nor predicted",
        "iou_per_class.one_sided": "iou_per_class: on {case}, class {c} gets IoU {shown}; a class {side} has IoU 0: its "
        "union holds {union}, its intersection nothing.{nan}",
        "iou_per_class.wrong": "iou_per_class: wrong IoU on {case}: expected {expected}, got {got}; rows are true "
        "classes, columns predicted ones",
    }
)

_IOU = "iou_per_class"


def _confusions() -> list[tuple[str, torch.Tensor]]:
    """Confusion matrices (rows: true class, columns: predicted), each with a case name."""
    g = torch.Generator().manual_seed(0)
    dense = torch.randint(0, 50, (4, 4), generator=g)
    dense.diagonal().add_(100)
    absent = torch.randint(0, 30, (5, 5), generator=g)
    absent[3, :] = 0  # class 3 never occurs...
    absent[:, 3] = 0  # ...and is never predicted
    never_predicted = torch.tensor([[50, 10, 0], [5, 40, 0], [7, 3, 0]])  # class 2 occurs, never predicted
    never_true = torch.tensor([[50, 6, 2, 1], [0, 0, 0, 0], [4, 9, 30, 0], [3, 0, 5, 20]])  # class 1 is only predicted
    return [
        (say("iou_per_class.dense"), dense),
        (say("iou_per_class.never_predicted"), never_predicted),
        (say("iou_per_class.absent"), absent),
        (say("iou_per_class.never_true"), never_true),
    ]


def _wrong_answers(confusion: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    c = confusion.double()
    tp, truly, predicted = c.diag(), c.sum(1), c.sum(0)
    with torch.no_grad():
        return [
            (tp / truly, "iou_per_class.recall"),
            (tp / predicted, "iou_per_class.precision"),
            (tp / (truly + predicted), "iou_per_class.counted_twice"),
            (2 * tp / (truly + predicted), "iou_per_class.dice"),
        ]


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal, NaN where NaN (within float tolerance)."""
    return got.shape == want.shape and torch.allclose(got.double(), want.double(), rtol=1e-6, equal_nan=True)


@exercise(_IOU)
def check_iou_per_class(fn) -> None:
    for case, confusion in _confusions():
        got = expect_tensor(_IOU, call(_IOU, fn, confusion.clone(), case=case), "iou_per_class.a_tensor")
        classes = confusion.shape[0]
        expect_shape(_IOU, got, (classes,), say("iou_per_class.shape_hint", case=case))
        if not got.is_floating_point():
            raise fail("iou_per_class.integers", dtype=got.dtype)
        want = ref_iou_per_class(confusion)
        if _same(got, want):
            continue
        present = ~want.isnan()
        for wrong, problem in _wrong_answers(confusion):
            if torch.allclose(got.double()[present], wrong[present], rtol=1e-6):
                raise fail(problem)
        first = next(c for c in range(classes) if not _same(got[c : c + 1], want[c : c + 1]))
        value = got[first].item()
        shown = "NaN" if math.isnan(value) else f"{value:.3g}"
        if not present[first]:
            raise fail("iou_per_class.absent_not_nan", case=case, c=first, shown=shown)
        truly, predicted = int(confusion[first].sum()), int(confusion[:, first].sum())
        if truly == 0 or predicted == 0:  # on one side only: nothing in common, so the IoU is 0
            side, union = (
                (say("iou_per_class.only_predicted"), say("iou_per_class.false_positives", count=predicted))
                if truly == 0
                else (say("iou_per_class.only_true"), say("iou_per_class.all_missed", count=truly))
            )
            nan = say("iou_per_class.nan_means_absent") if math.isnan(value) else ""
            raise fail("iou_per_class.one_sided", case=case, c=first, shown=shown, side=side, union=union, nan=nan)
        raise fail(
            "iou_per_class.wrong",
            case=case,
            expected=[round(v, 3) for v in want.tolist()],
            got=[round(v, 3) for v in got.double().tolist()],
        )
