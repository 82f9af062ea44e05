"""Segmentation metrics from one confusion matrix over a whole split (torchmetrics)."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo.data.m2nist import BACKGROUND, CLASS_NAMES, NUM_CLASSES


def scores_from_confusion(
    confusion: torch.Tensor, background: int | None = BACKGROUND
) -> dict[str, torch.Tensor]:
    """Pixel accuracy, IoU per class, mean IoU and mean IoU without `background`.

    Args:
        confusion: (C, C) counts, rows = true class, columns = predicted class.

    A class absent from both truth and prediction has no IoU (NaN) and is left out of the means.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    keep = torch.ones_like(iou, dtype=torch.bool)
    if background is not None:
        keep[background] = False
    return {
        "pixel_acc": tp.sum() / confusion.sum().clamp(min=1),
        "iou": iou,
        "miou": iou.nanmean(),
        "digit_miou": iou[keep].nanmean(),
    }


class SegmentationMetrics(Metric):
    """Accumulates one (C, C) confusion matrix; `compute()` returns `scores_from_confusion`'s dict.

    Counts are summed across processes under DDP (torchmetrics' sync), so every rank sees the
    scores of the whole split.
    """

    full_state_update = False

    def __init__(self, num_classes: int = NUM_CLASSES, background: int | None = BACKGROUND) -> None:
        super().__init__()
        self.background = background
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def update(self, logits_or_labels: torch.Tensor, target: torch.Tensor) -> None:
        preds = logits_or_labels.argmax(1) if logits_or_labels.dim() == target.dim() + 1 else logits_or_labels
        self.confusion.update(preds.reshape(-1), target.reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.confusion.compute(), self.background)

    def reset(self) -> None:
        super().reset()
        self.confusion.reset()


def format_table(scores: dict[str, torch.Tensor], names: tuple[str, ...] = CLASS_NAMES) -> str:
    """A per-class IoU table followed by the summary figures."""
    lines = [f"{'class':>10}  {'IoU':>7}", f"{'-' * 10}  {'-' * 7}"]
    lines += [f"{n:>10}  {float(v):7.4f}" for n, v in zip(names, scores["iou"])]
    lines += [
        f"{'-' * 10}  {'-' * 7}",
        f"{'pixel acc':>10}  {float(scores['pixel_acc']):7.4f}",
        f"{'mean IoU':>10}  {float(scores['miou']):7.4f}",
        f"{'digit mIoU':>10}  {float(scores['digit_miou']):7.4f}",
    ]
    return "\n".join(lines)
