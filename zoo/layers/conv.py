"""Convolution building blocks that keep the spatial size."""

from __future__ import annotations

import torch.nn as nn


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps H and W for a stride-1 convolution with an odd kernel."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd to keep the size, found {kernel_size}")
    return dilation * (kernel_size - 1) // 2


class ConvBNAct(nn.Sequential):
    """Conv2d ("same" padding) then optional BatchNorm2d then optional ReLU.

    Args:
        groups: `in_channels` (= `out_channels`) makes it depthwise.
        norm, act: add BatchNorm2d / ReLU after the convolution.
        bias: give the convolution a bias (the seed's networks do, even before BN).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: bool = True,
        act: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation),
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.act = nn.ReLU(inplace=True)
