"""Stride-1 pooling that keeps the spatial size."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.cpu import bf16_depthwise_build_stalls


class BoxMean(nn.AvgPool2d):
    """Mean over the k x k window around every pixel; near a border, over the pixels inside.

    The same as `nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)` (it is one,
    for the receptive-field tracer), computed as window sums by two depthwise convolutions with a
    k x 1 and a 1 x k kernel of ones, multiplied by the reciprocal of each window's pixel count:
    k + k reads per pixel instead of k * k. Faster than PyTorch 2.13's CPU average pooling, whose
    bf16 backward is slow; a cumulative-sum version was slower than either (the measurements:
    docs/notes/2026-12-07-kernel-choices.md).

    The sums run in fp32 (fp64 for fp64 input) and come back in the input's dtype, except for
    bf16 input, which sums in bf16 tensors: oneDNN still accumulates each window in fp32, but
    rounds the row sums, the window sums, the reciprocal counts and the product to bf16 (under
    1.6% of the value in all), and no fp32 copy of the input or of its gradient is made: faster in
    bf16, with gradients as close to fp32's as fp32 sums give, and the same test accuracy
    (docs/notes/2026-12-07-kernel-choices.md, docs/notes/2026-12-06-bf16-against-fp32.md). On a
    CPU, 2-16 channels with windows of 15 or more sum in fp32 all the same: oneDNN takes minutes
    to build that bf16 kernel (`zoo.cpu.bf16_depthwise_build_stalls`).
    """

    def __init__(self, kernel_size: int) -> None:
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be a positive odd int, found {kernel_size!r}")
        super().__init__(kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"BoxMean expects (N, C, H, W), found shape {tuple(x.shape)}")
        k, r = self.kernel_size, self.kernel_size // 2
        c, h, w = x.shape[1:]
        wide = torch.promote_types(x.dtype, torch.float32)  # fp16 sums in fp32 (its range), fp64 in fp64
        bf16 = x.dtype == torch.bfloat16 and not (
            x.device.type == "cpu" and bf16_depthwise_build_stalls(c, k)
        )
        dtype = torch.bfloat16 if bf16 else wide
        with torch.autocast(x.device.type, enabled=False):  # autocast would make fp32 input's sums bf16
            ones = torch.ones(c, 1, k, 1, dtype=dtype, device=x.device)
            rows = F.conv2d(x.to(dtype), ones, padding=(r, 0), groups=c)
            sums = F.conv2d(rows, ones.transpose(2, 3), padding=(0, r), groups=c)
            # counts reach k * k: not exact in bf16 past 256, so their reciprocals come from `wide`
            counts = _window_counts(h, k, x.device, wide)[:, None] * _window_counts(w, k, x.device, wide)
            return (sums * (1 / counts).to(dtype)).to(x.dtype)


def _window_counts(n: int, k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """How many of n positions a centred window of k covers, at each position."""
    i, r = torch.arange(n, device=device), k // 2
    return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(dtype)
