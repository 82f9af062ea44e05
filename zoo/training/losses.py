"""Losses for per-pixel classification: cross-entropy, class weights, Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.cards import IGNORE_INDEX


def median_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Median-frequency balancing: weight_c = median(freq) / freq_c (Eigen & Fergus, 2015).

    Background covers ~94% of M2NIST's pixels, so it gets a weight well below 1. Classes that
    never occur get weight 0; IGNORE_INDEX pixels are not counted.
    """
    labels = labels.reshape(-1).long()
    return median_frequency_from_counts(torch.bincount(labels[labels != IGNORE_INDEX], minlength=num_classes))


def median_frequency_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """`median_frequency_weights` from the pixel count of each class."""
    freq = counts.double() / counts.sum()
    present = freq > 0
    weights = torch.zeros(len(counts), dtype=torch.float64)
    weights[present] = freq[present].median() / freq[present]
    return weights.float()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice averaged over all classes, per class (2 * overlap + eps) / (mass + eps) over the batch.

    The smoothing `eps` makes a class that is neither in the truth nor predicted (no mass) a
    perfect 1, so it neither rewards nor punishes; a class predicted where it is absent scores
    eps / (predicted mass + eps), near 0. IGNORE_INDEX pixels count neither way.
    """
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice.mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str = "ce", weight: torch.Tensor | None = None
) -> torch.Tensor:
    """`kind` "ce" (cross-entropy, optionally class-weighted) or "ce+dice" (their sum).

    Pixels labelled IGNORE_INDEX (void, crop padding) are left out of both.
    """
    ce = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX)
    if kind == "ce":
        return ce
    if kind == "ce+dice":
        return ce + dice_loss(logits, target)
    raise ValueError(f"loss must be 'ce' or 'ce+dice', found {kind!r}")
