"""ResNet18 that never downsamples (DRN style), and its strided baseline.

Both use a stride-1 3x3 stem with no max pooling (the CIFAR form), then 4 stages of 2 basic
blocks. `resnet18_dilated` replaces the stride-2 of stages 2-4 by dilations 2, 4, 8: both 3x3
convs of every block in a stage are dilated (padding = dilation), as in Dilated Residual
Networks (Yu et al., 2017). `tail_dilations` adds a degridding tail of plain Conv-BN-ReLU
layers without residuals (DRN-C uses decreasing dilations, e.g. 4, 2, 1), which removes the
gridding that stacked equal dilations leave. `resnet18_strided` keeps the usual stride 2 at
the start of stages 2-4 (output stride 8). Convolutions have no bias (BN follows each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from zoo.layers.conv import Conv2d, ConvBNAct, same_padding
from zoo.models.base import DEFAULT_NUM_CLASSES, ZooModel, check_widths, layer_ints, positive_ints
from zoo.registry import register_model

RESNET_SMALL_WIDTHS = (16, 24, 32, 48)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, both dilated by `dilation`, plus a shortcut (1x1 conv + BN if needed)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = same_padding(3, dilation)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, pad, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, pad, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(ZooModel):
    """ResNet with basic blocks, a stride-1 stem and per-stage strides or dilations.

    Args:
        widths: channels of the four stages (the stem has widths[0]).
        blocks: basic blocks per stage (ResNet18: 2, 2, 2, 2).
        strides: stride of each stage's first block.
        dilations: dilation of both convs of every block in each stage.
        tail_dilations: dilations of a degridding tail of Conv-BN-ReLU layers (no residuals).
        in_channels, num_classes, head: as for every zoo model.
    """

    def __init__(
        self,
        widths: Sequence[int] = RESNET_SMALL_WIDTHS,
        blocks: Sequence[int] = (2, 2, 2, 2),
        strides: int | Sequence[int] = 1,
        dilations: int | Sequence[int] = (1, 2, 4, 8),
        tail_dilations: Sequence[int] = (),
        in_channels: int = 1,
        num_classes: int = DEFAULT_NUM_CLASSES,
        head: str = "pixel",
    ) -> None:
        super().__init__(in_channels, num_classes, head)
        widths = check_widths(widths)
        n = len(widths)
        blocks = layer_ints("blocks", blocks, n)
        strides = layer_ints("strides", strides, n)
        dilations = layer_ints("dilations", dilations, n)
        tail_dilations = positive_ints("tail_dilations", list(tail_dilations))

        layers: list[nn.Module] = [ConvBNAct(in_channels, widths[0], 3, bias=False)]
        prev = widths[0]
        for w, nb, s, d in zip(widths, blocks, strides, dilations):
            stage = [BasicBlock(prev, w, s, d)] + [BasicBlock(w, w, 1, d) for _ in range(nb - 1)]
            layers.append(nn.Sequential(*stage))
            prev = w
        layers += [ConvBNAct(prev, prev, 3, dilation=d, bias=False) for d in tail_dilations]
        self.features = nn.Sequential(*layers)
        self.output_stride = math.prod(strides)
        self._finish(prev)


@register_model
def resnet18_dilated(**kwargs) -> ResNet:
    """ResNet18 without downsampling: stage dilations 1, 2, 4, 8; widths 16-24-32-48 by default."""
    return ResNet(**kwargs)


@register_model
def resnet18_dilated_degrid(**kwargs) -> ResNet:
    """`resnet18_dilated` plus a DRN-C degridding tail of dilations 4, 2, 1."""
    return ResNet(**{"tail_dilations": (4, 2, 1), **kwargs})


@register_model
def resnet18_strided(**kwargs) -> ResNet:
    """Downsampling baseline: the same ResNet18 with stride 2 at stages 2-4 (output stride 8)."""
    return ResNet(**{"strides": (1, 2, 2, 2), "dilations": 1, **kwargs})
