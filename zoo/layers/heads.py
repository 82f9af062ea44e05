"""Heads: a per-pixel 1x1 classifier, and the classifier's GAP + linear head."""

from __future__ import annotations

import torch
import torch.nn as nn

HEADS = ("pixel", "classify")


class PixelHead(nn.Module):
    """A 1x1 convolution to `num_classes`: one score per class per pixel."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ClassifyHead(nn.Module):
    """Global average pooling then a linear layer: one score per class per image."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def make_head(kind: str, in_channels: int, num_classes: int) -> nn.Module:
    """Build the head called `kind` ("pixel" or "classify")."""
    if kind == "pixel":
        return PixelHead(in_channels, num_classes)
    if kind == "classify":
        return ClassifyHead(in_channels, num_classes)
    raise ValueError(f"head must be one of {HEADS}, found {kind!r}")


def pixel_head_from_classifier(head: ClassifyHead) -> PixelHead:
    """A PixelHead with the classifier's weights: the spatial mean of its output is the classifier's logits."""
    if not isinstance(head, ClassifyHead):
        raise TypeError(f"expected a ClassifyHead, found {type(head).__name__}")
    out_features, in_features = head.fc.weight.shape
    pixel = PixelHead(in_features, out_features).to(head.fc.weight)
    with torch.no_grad():
        pixel.conv.weight.copy_(head.fc.weight[:, :, None, None])
        pixel.conv.bias.copy_(head.fc.bias)
    return pixel
