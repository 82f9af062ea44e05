"""CPU runtime: an explicit malloc setting for speed, bf16 detection, and a oneDNN bf16 workaround."""

from __future__ import annotations

import ctypes
import os
import sys
import types

import torch
from torch import nn

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_applied = False
_decided = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed large blocks instead of returning them to the OS.

    Every CPU forward (and training step) allocates and frees the same activation-sized buffers;
    by default glibc unmaps large blocks on free (its threshold stops growing at 32 MB, and
    activations are that big at batch 32), so every call page-faults them back in, zero-filled.
    Keeping them measured up to 25% more training and inference throughput here
    (benchmarks/profile_step.py counts the faults); the cost is that the process keeps its peak
    memory, as PyTorch's CUDA caching allocator does. A process-wide setting, so nothing applies
    it behind your back: `train.py` and the benchmarks call it once at start; an application
    that wants the speed calls it once too. `ZOO_KEEP_FREED_MEMORY=0` turns it off.
    Returns whether it is in effect.
    """
    global _applied, _decided
    if not _decided:
        _decided = True
        _applied = os.environ.get("ZOO_KEEP_FREED_MEMORY", "1") != "0" and _mallopt_keep()
    return _applied


def _mallopt_keep() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31) == 1


def has_bf16() -> bool:
    """Whether this CPU executes bf16 matrix instructions (AVX512-BF16 or AMX), not emulates them."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _padded_conv_forward(
    conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # zero input channels up to a multiple of 16 on both operands: the same result, and a shape
    # whose bf16 channels_last weight gradient oneDNN computes right
    pad = (0, 0, 0, 0, 0, -conv.in_channels % 16)
    x = nn.functional.pad(x, pad).contiguous(memory_format=torch.channels_last)
    weight = nn.functional.pad(weight, pad).contiguous(memory_format=torch.channels_last)
    return nn.Conv2d._conv_forward(conv, x, weight, bias)


def _nchw_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(),) + args[1:]


def avoid_bf16_conv_fault(model: nn.Module) -> list[str]:
    """Work around the convolutions whose bf16 channels_last weight gradient oneDNN gets wrong.

    Measured with PyTorch 2.13 on an AVX512-BF16 CPU: a dilated 3x3 convolution whose input
    channels per group are not a multiple of 16 returns a wrong weight gradient in bf16
    channels_last (relative error 0.6-1.4 at dilation 2, often non-finite from dilation 4; at
    batch 8 as at 32): 20, 24, 40, 56 or 72 channels in one group, depthwise at any width. One
    group of 4-12 channels was right; it is included as a margin. NCHW is right.
    An ungrouped one runs on input and weight zero-padded to the next multiple of 16 channels:
    the same values and gradients, a third more arithmetic for 24 channels, but channels_last
    throughout (running it in NCHW instead cost vgg4_dilated's bf16 step ~15%, mostly in the
    layout conversions around it). A grouped one gets NCHW weights and inputs. Parameters and
    state dict are unchanged; tests/test_bf16.py checks every convolution of every model.
    For training only: inference takes the fused path. Returns the names of the convolutions changed.
    """
    changed = []
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and max(conv.dilation) >= 2 and (conv.in_channels // conv.groups) % 16:
            if conv.groups == 1:
                conv._conv_forward = types.MethodType(_padded_conv_forward, conv)
            else:
                # clone: a depthwise weight (C, 1, k, k) counts as contiguous in either layout
                conv.weight.data = conv.weight.data.clone(memory_format=torch.contiguous_format)
                if not getattr(conv, "_nchw_hook", None):
                    conv._nchw_hook = conv.register_forward_pre_hook(_nchw_input)
            changed.append(name)
    return changed
