"""Heads: a per-pixel 1x1 classifier, the classifier's GAP + linear head, and a local-context head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from zoo.layers.conv import ConvBNAct
from zoo.layers.pool import BoxMean

HEADS = ("pixel", "classify", "context")
CONTEXT_WINDOWS = (29,)  # one M2NIST digit (28x28), centred on the pixel


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


class ContextHead(nn.Module):
    """A per-pixel head that also sees its features averaged over windows around the pixel.

    The classifier's global average pool made local and stride 1: every pixel gets the mean
    feature of an object-sized window (`BoxMean`) beside its own, a 1x1 Conv-BN-ReLU mixes the two,
    and a 1x1 convolution scores the classes. Deciding *which* digit a stroke belongs to is a
    whole-glyph question, and the pooled features answer it the way a classifier's do. Full
    resolution throughout; the receptive field grows by the largest window minus one.

    Args:
        windows: odd window sizes, one pooled copy of the features each.
        pooled_channels: average only the last this many input channels (the deep features
            behind a `SkipConcat`; the early ones it carries are for sharp edges, not context),
            and mix to this many; default all of them.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        windows: Sequence[int] = CONTEXT_WINDOWS,
        pooled_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not windows:
            raise ValueError("windows must name at least one window size")
        pooled = in_channels if pooled_channels is None else pooled_channels
        if not 1 <= pooled <= in_channels:
            raise ValueError(f"pooled_channels must be in [1, {in_channels}], found {pooled_channels!r}")
        self.in_channels = in_channels
        self.pooled_channels = pooled
        self.pools = nn.ModuleList(BoxMean(k) for k in windows)
        self.mix = ConvBNAct(in_channels + pooled * len(self.pools), pooled, kernel_size=1)
        self.conv = nn.Conv2d(pooled, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Class scores per pixel.

        Args:
            x: the features, or their channel blocks in order (together `in_channels` wide, the
                pooled channels inside the last block); blocks are read apart, so nothing is
                concatenated but the mix's input.
        """
        blocks = list(x) if isinstance(x, (list, tuple)) else [x]
        last = blocks[-1]
        channels = self.in_channels if len(blocks) == 1 else last.shape[1]  # an int under fx tracing too
        # slicing all channels would still cost a zero-padded copy of the gradient in the backward
        deep = last if channels == self.pooled_channels else last[:, channels - self.pooled_channels :]
        return self.conv(self.mix(torch.cat([*blocks, *(pool(deep) for pool in self.pools)], dim=1)))


def make_head(kind: str, in_channels: int, num_classes: int, pooled_channels: int | None = None) -> nn.Module:
    """Build the head called `kind` ("pixel", "classify" or "context"; `pooled_channels`: `ContextHead`'s)."""
    if kind == "pixel":
        return PixelHead(in_channels, num_classes)
    if kind == "classify":
        return ClassifyHead(in_channels, num_classes)
    if kind == "context":
        return ContextHead(in_channels, num_classes, pooled_channels=pooled_channels)
    raise ValueError(f"head must be one of {HEADS}, found {kind!r}")


def pixel_head_from_classifier(head: ClassifyHead) -> PixelHead:
    """A PixelHead with the classifier's weights: its output's spatial mean is the classifier's logits."""
    if not isinstance(head, ClassifyHead):
        raise TypeError(f"expected a ClassifyHead, found {type(head).__name__}")
    out_features, in_features = head.fc.weight.shape
    pixel = PixelHead(in_features, out_features).to(head.fc.weight)
    with torch.no_grad():
        pixel.conv.weight.copy_(head.fc.weight[:, :, None, None])
        pixel.conv.bias.copy_(head.fc.bias)
    return pixel
