"""Segmentation metrics from one confusion matrix over a whole split (torchmetrics)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo.cards import IGNORE_INDEX


def scores_from_confusion(confusion: torch.Tensor, background: int | None = None) -> dict[str, torch.Tensor]:
    """Pixel accuracy, IoU per class, mean IoU, and with a `background` class the mean IoU without it.

    Args:
        confusion: (C, C) counts, rows = true class, columns = predicted class.
        background: M2NIST's background class (10): "digit_miou" is the mean IoU of the others.

    A class absent from both truth and prediction has no IoU (NaN) and is left out of the means.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    scores = {"pixel_acc": tp.sum() / confusion.sum().clamp(min=1), "iou": iou, "miou": iou.nanmean()}
    if background is not None:
        keep = torch.ones_like(iou, dtype=torch.bool)
        keep[background] = False
        scores["digit_miou"] = iou[keep].nanmean()
    return scores


class SegmentationMetrics(Metric):
    """Accumulates one (C, C) confusion matrix; `compute()` returns `scores_from_confusion`'s dict.

    Counts are summed across processes under DDP (torchmetrics' sync), so every rank sees the
    scores of the whole split. Pixels labelled IGNORE_INDEX (void, padding) are not counted.
    """

    full_state_update = False

    def __init__(self, num_classes: int, background: int | None = None) -> None:
        super().__init__()
        self.background = background
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)

    def update(self, logits_or_labels: torch.Tensor, target: torch.Tensor) -> None:
        preds = logits_or_labels.argmax(1) if logits_or_labels.dim() == target.dim() + 1 else logits_or_labels
        self.confusion.update(preds.reshape(-1), target.reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.confusion.compute(), self.background)

    def reset(self) -> None:
        super().reset()
        self.confusion.reset()


def format_table(scores: dict[str, torch.Tensor], names: Sequence[str]) -> str:
    """A per-class IoU table (classes named) followed by the summary figures."""
    width = max(10, *(len(n) for n in names))
    rule = f"{'-' * width}  {'-' * 7}"
    lines = [f"{'class':>{width}}  {'IoU':>7}", rule]
    lines += [f"{n:>{width}}  {float(v):7.4f}" for n, v in zip(names, scores["iou"])]
    lines += [rule, f"{'pixel acc':>{width}}  {float(scores['pixel_acc']):7.4f}"]
    lines += [f"{'mean IoU':>{width}}  {float(scores['miou']):7.4f}"]
    if "digit_miou" in scores:
        lines += [f"{'mIoU w/o bg':>{width}}  {float(scores['digit_miou']):7.4f}"]
    return "\n".join(lines)
