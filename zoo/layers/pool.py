"""Stride-1 pooling that keeps the spatial size."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BoxMean(nn.AvgPool2d):
    """Mean over the k x k window around every pixel; near a border, over the pixels inside.

    The same as `nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)` (it is one,
    for the receptive-field tracer), computed as a k x 1 then a 1 x k mean: k + k reads per pixel
    instead of k * k (a 29x29 window: 58 instead of 841). Both passes exclude the padding, and the
    count of a clipped rectangle is the product of its row and column counts, so this is exact.
    Fastest on channels_last input (an ad hoc A/B: about 3x a cumulative-sum version, forward and
    backward, at 32x48x64x84).
    """

    def __init__(self, kernel_size: int) -> None:
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be a positive odd int, found {kernel_size!r}")
        super().__init__(kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"BoxMean expects (N, C, H, W), found shape {tuple(x.shape)}")
        k, r = self.kernel_size, self.kernel_size // 2
        dtype = x.dtype
        if dtype == torch.bfloat16 and x.device.type == "cpu" and torch.is_grad_enabled() and x.requires_grad:
            # PyTorch 2.13's CPU bf16 average-pool backward is slow: in fp32, with the two casts,
            # forward + backward took 71 ms instead of 125 (32x48x64x84, a 29x29 window)
            x = x.float()
        rows = F.avg_pool2d(x, (k, 1), stride=1, padding=(r, 0), count_include_pad=False)
        return F.avg_pool2d(rows, (1, k), stride=1, padding=(0, r), count_include_pad=False).to(dtype)
