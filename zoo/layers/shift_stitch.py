"""OverFeat-style shift-and-stitch pooling: pool without losing resolution."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo import cpu


def space_to_batch(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) -> (N*k*k, C, H/k, W/k); offset (dy, dx) of sample n goes to batch (n*k+dy)*k+dx."""
    n, c, h, w = x.shape
    if h % k or w % k:
        raise ValueError(f"space_to_batch needs H and W divisible by {k}, found {h}x{w}")
    return _space_to_batch(x, k, h // k, w // k)


def _channels_last(t: torch.Tensor) -> bool:
    """Laid out (N, H, W, C) in memory: channels adjacent, also for a cropped view of such a tensor."""
    return t.shape[1] > 1 and t.stride(1) == 1


def _space_to_batch(x: torch.Tensor, k: int, hb: int, wb: int) -> torch.Tensor:
    # sizes passed in as hb * k, wb * k so that symbolic shapes (torch.export) need no guards
    n, c = x.shape[0], x.shape[1]
    if _channels_last(x):  # one copy that keeps the layout, so the body's convs need no conversion
        x = x.permute(0, 2, 3, 1).reshape(n, hb, k, wb, k, c).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n * k * k, hb, wb, c).permute(0, 3, 1, 2)
    x = x.reshape(n, c, hb, k, wb, k).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(n * k * k, c, hb, wb)


def batch_to_space(y: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of `space_to_batch`: out[n, c, h*k+dy, w*k+dx] = y[(n*k+dy)*k+dx, c, h, w]."""
    b, c, h, w = y.shape
    if b % (k * k):
        raise ValueError(f"batch_to_space needs a batch divisible by {k * k}, found {b}")
    return _batch_to_space(y, k)


def _batch_to_space(y: torch.Tensor, k: int) -> torch.Tensor:
    b, c, h, w = y.shape
    if _channels_last(y):
        y = y.permute(0, 2, 3, 1).reshape(b // (k * k), k, k, h, w, c).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(b // (k * k), h * k, w * k, c).permute(0, 3, 1, 2)
    y = y.reshape(b // (k * k), k, k, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(b // (k * k), c, h * k, w * k)


class ShiftStitch(nn.Module):
    """Max-pool with stride k at all k*k offsets, run `body` on each, stitch back to full resolution.

    The k*k pooled maps are folded into the batch, so `body` runs once at 1/k of the resolution
    and its convolutions need no dilation: the stitching gives them an effective dilation of k.
    For H and W divisible by k the output equals a stride-1 k x k max pooling (padded with -inf
    at the bottom and right) followed by `body` with every dilation and padding multiplied by k.

    Border behaviour for other sizes: the pooled map is zero-padded at the bottom and right up to
    the next multiple of k, `body` runs on it and the output is cropped back to H x W. The first
    convolution of `body` then sees the same zeros as the dense form's padding; deeper layers see
    their own response to those rows, so outputs within the body's receptive field of the bottom
    or right edge can differ slightly from the dense form.

    Args:
        body: any module mapping (B, C, h, w) -> (B, C', h, w).
        kernel_size: pooling size and stride k.
    """

    def __init__(self, body: nn.Module, kernel_size: int = 2) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive int, found {kernel_size!r}")
        self.body = body
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        h, w = x.shape[-2], x.shape[-1]
        hb, wb = (h + k - 1) // k, (w + k - 1) // k
        pooled = cpu.max_pool_stride1(F.pad(x, (0, k - 1, 0, k - 1), value=float("-inf")), k)
        if torch.compiler.is_compiling() or hb * k != h or wb * k != w:
            # zeros up to a multiple of k (always in a traced graph, so it holds for every size)
            pooled = F.pad(pooled, (0, wb * k - w, 0, hb * k - h))
        out = _batch_to_space(self.body(_space_to_batch(pooled, k, hb, wb)), k)
        return out[:, :, :h, :w]

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
