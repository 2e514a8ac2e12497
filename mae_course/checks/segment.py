"""Checks for lesson 10: the intersection over union of each class, from a confusion matrix."""

from __future__ import annotations

import math

import torch

from ..evaluation.segment import iou_per_class as ref_iou_per_class
from ._core import CheckFailed, call, exercise, expect_shape, expect_tensor

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
    return [("a 4-class matrix", dense), ("a 3-class matrix where class 2 is never predicted", never_predicted),
            ("a 5-class matrix where class 3 is absent and never predicted", absent),
            ("a 4-class matrix where class 1 is predicted but never true", never_true)]  # fmt: skip


def _wrong_answers(confusion: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    c = confusion.double()
    tp, truly, predicted = c.diag(), c.sum(1), c.sum(0)
    with torch.no_grad():
        return [
            (
                tp / truly,
                "divides by the pixels that truly are c (the row): that is the recall, not the IoU; "
                "the union also holds the pixels wrongly predicted as c",
            ),  # fmt: skip
            (
                tp / predicted,
                "divides by the pixels predicted as c (the column): that is the precision, not the "
                "IoU; the union also holds the pixels of c that were missed",
            ),  # fmt: skip
            (
                tp / (truly + predicted),
                "counts the pixels both call c twice: the union is row + column minus "
                "the diagonal, which the row and the column both contain",
            ),  # fmt: skip
            (
                2 * tp / (truly + predicted),
                "computes the Dice score 2TP / (row + column); the IoU is TP / (row + column - TP)",
            ),  # fmt: skip
        ]


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal, NaN where NaN (within float tolerance)."""
    return got.shape == want.shape and torch.allclose(got.double(), want.double(), rtol=1e-6, equal_nan=True)


@exercise(_IOU, "TP / (row + column - TP) per class, NaN for a class that is neither present nor predicted")
def check_iou_per_class(fn) -> None:
    for case, confusion in _confusions():
        got = expect_tensor(_IOU, call(_IOU, fn, confusion.clone(), case=case), "a tensor of one IoU per class")
        classes = confusion.shape[0]
        expect_shape(_IOU, got, (classes,), f"one IoU per class for {case}")
        if not got.is_floating_point():
            raise CheckFailed(
                f"{_IOU}: returned {got.dtype} values; an IoU is a fraction: convert the counts to float first "
                "(integer division rounds every IoU below 1 down to 0)"
            )
        want = ref_iou_per_class(confusion)
        if _same(got, want):
            continue
        present = ~want.isnan()
        for wrong, problem in _wrong_answers(confusion):
            if torch.allclose(got.double()[present], wrong[present], rtol=1e-6):
                raise CheckFailed(f"{_IOU}: {problem}")
        first = next(c for c in range(classes) if not _same(got[c : c + 1], want[c : c + 1]))
        value = got[first].item()
        shown = "NaN" if math.isnan(value) else f"{value:.3g}"
        if not present[first]:
            raise CheckFailed(
                f"{_IOU}: on {case}, class {first} is neither present nor predicted, and its IoU is {shown}; with "
                "nothing to measure it must be NaN, so that the mean IoU leaves it out (a 0 would pull the mean "
                "down, a 1 would lift it)"
            )
        truly, predicted = int(confusion[first].sum()), int(confusion[:, first].sum())
        if truly == 0 or predicted == 0:  # on one side only: nothing in common, so the IoU is 0
            side, union = (
                ("predicted but never true", f"the {predicted} pixels wrongly predicted as it (false positives)")
                if truly == 0
                else ("true but never predicted", f"its {truly} pixels, all missed")
            )
            nan = " A NaN would leave them out of the mean IoU; NaN is only for a class neither present nor predicted"
            raise CheckFailed(
                f"{_IOU}: on {case}, class {first} gets IoU {shown}; a class {side} has IoU 0: its union holds "
                f"{union}, its intersection nothing.{nan if math.isnan(value) else ''}"
            )
        raise CheckFailed(
            f"{_IOU}: wrong IoU on {case}: expected {[round(v, 3) for v in want.tolist()]}, got "
            f"{[round(v, 3) for v in got.double().tolist()]}; rows are true classes, columns predicted ones"
        )
