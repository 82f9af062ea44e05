"""Convolution building blocks that keep the spatial size."""

from __future__ import annotations

import torch
import torch.nn as nn

from zoo import cpu


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps H and W for a stride-1 convolution with an odd kernel."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd to keep the size, found {kernel_size}")
    return dilation * (kernel_size - 1) // 2


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that trains right in CPU bf16: shapes hit by a oneDNN fault take a correct path.

    The rule and the probe live in `zoo.cpu` (`bf16_conv_fault_applies`); everywhere else this is
    `nn.Conv2d`, with the same parameters and state dict.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu.bf16_conv_fault_applies(self, x):
            return cpu.conv2d_avoiding_bf16_fault(self, x)
        return super().forward(x)


def avoid_bf16_conv_fault(model: nn.Module) -> list[str]:
    """Give a model's own `nn.Conv2d` layers the zoo's protection from the bf16 fault.

    Zoo models need no call: their convolutions are `Conv2d`, which take the correct path by
    themselves. This turns the plain `nn.Conv2d` layers of any other model into that class
    (parameters and state dict unchanged) and returns the names of the convolutions the rule
    covers. (It lived in `zoo.cpu` while it patched layers, and only `train.py` called it.)
    """
    covered = []
    for name, conv in model.named_modules():
        if type(conv) is nn.Conv2d:
            conv.__class__ = Conv2d
        if isinstance(conv, nn.Conv2d) and cpu.has_bf16_fault_shape(conv):
            covered.append(name)
    return covered


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
        self.conv = Conv2d(
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu.fused_conv_applies(self, x):  # CPU inference: one oneDNN call (zoo.cpu)
            return cpu.fused_conv_bn_act(self.conv, getattr(self, "bn", None), hasattr(self, "act"), x)
        return super().forward(x)
