"""Plain convolution stacks (VGG style): dilated, large-kernel, strided and pooled 4-layer VGGs.

Layer table of the 4-layer VGGs (every conv: "same" padding, bias, BatchNorm, ReLU):

    layer  width (wide)  vgg4_dilated  vgg4_large_kernel  vgg4_strided  vgg4_stitch / vgg4_maxpool
    1      16 (64)       3x3, d=1      3x3                3x3, s=1      3x3
    2      24 (128)      3x3, d=2      5x5                3x3, s=2      2x2 pool, then 3x3
    3      32 (256)      3x3, d=4      7x7                3x3, s=2      2x2 pool, then 3x3
    4      48 (512)      3x3, d=8      9x9                3x3, s=2      2x2 pool, then 3x3

`vgg7_dilated` adds depth and a context module (Yu & Koltun) so that every pixel of a 28x28
digit sees the whole digit: widths 16-24-32-32-48-48-48, 3x3 convs with dilations
1, 1, 2, 4, 8, 16, 1 (receptive field 67, no holes: each dilation is at most the field before it).
`vgg7_dilated_context` gives it a `ContextHead` (a digit-sized stride-1 average of the features
beside each pixel's own; receptive field 95). `vgg4_dilated_context` gives the same head to
`vgg4_dilated`: receptive field 59, under 30k parameters. `vgg7_dilated_skip_context` is the
same 7 layers at widths 16-24-32-32-32-32-32 whose head also sees layer 2's sharp features through
a full-resolution skip (`SkipConcat`), as U-Net's top level does: 51k parameters, receptive field
95, made for real images at their full size (docs/benchmarks.md, ISBI membranes).
`vgg7_dilated_skip16_context` narrows its layer 2 (the skipped one) to 16 channels: widths that
are multiples of 16 are what oneDNN's bf16 convolutions run fastest, and 24 input channels to a
dilated convolution take the slower way around a oneDNN fault (`zoo.cpu.bf16_conv_fault`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from zoo.layers.conv import ConvBNAct
from zoo.layers.heads import ContextHead
from zoo.layers.shift_stitch import ShiftStitch
from zoo.layers.skip import SkipConcat
from zoo.models.base import (
    DEFAULT_NUM_CLASSES,
    ZooModel,
    check_positive_int,
    check_widths,
    layer_ints,
    per_layer,
)
from zoo.registry import register_model

POOLS = (None, "max", "stitch")
VGG4_WIDTHS = (16, 24, 32, 48)
VGG7_WIDTHS = (16, 24, 32, 32, 48, 48, 48)
VGG7_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
VGG7_SLIM_WIDTHS = (16, 24, 32, 32, 32, 32, 32)
VGG7_SKIP16_WIDTHS = (16, 16, 32, 32, 32, 32, 32)
WIDE_WIDTHS = (64, 128, 256, 512)


def _assemble(layers: list[nn.Module], pool: str | None, pool_at: list[int], k: int) -> nn.Module:
    """Insert k x k pooling before the layers listed in `pool_at`."""
    if pool is None:
        return nn.Sequential(*layers)
    if pool == "max":
        seq: list[nn.Module] = []
        for i, layer in enumerate(layers):
            if i in pool_at:
                # ceil_mode keeps odd sizes (and 1x1) working: the last window may hang over the edge
                seq.append(nn.MaxPool2d(k, stride=k, ceil_mode=True))
            seq.append(layer)
        return nn.Sequential(*seq)
    # stitch: everything after a pooling point runs inside that point's ShiftStitch, nested
    bounds = [0, *pool_at, len(layers)]
    inner: nn.Module | None = None
    for j in reversed(range(len(bounds) - 1)):
        segment = list(layers[bounds[j] : bounds[j + 1]])
        if inner is not None:
            segment.append(inner)
        body = nn.Sequential(*segment)
        inner = ShiftStitch(body, k) if j > 0 else body
    return inner


class VGG(ZooModel):
    """A plain stack of Conv-BN-ReLU layers, optionally with pooling between them.

    Args:
        widths: output channels per layer.
        kernel_sizes, dilations, strides: one int for all layers or one per layer.
        depthwise: per layer; a depthwise layer keeps its input's channel count.
        final_act: put BN + ReLU after the last convolution too.
        pool: None, "max" (strided max pooling; logits upsampled like the strided baselines)
            or "stitch" (shift-and-stitch pooling: full resolution, see `ShiftStitch`).
        pool_at: indices of the layers preceded by a pooling; default every layer after the first.
        pool_size: the pooling's size and stride.
        skip_from: the output of this layer also goes to the head, beside the last layer's
            (`SkipConcat`: a full-resolution skip connection); the context head averages only
            the last layer's features.
        in_channels, num_classes: input channels and classes.
        head: "pixel" (1x1 conv, per-pixel logits), "classify" (global average pool + linear)
            or "context" (`ContextHead`).
    """

    def __init__(
        self,
        widths: Sequence[int] = VGG4_WIDTHS,
        kernel_sizes: int | Sequence[int] = 3,
        dilations: int | Sequence[int] = 1,
        strides: int | Sequence[int] = 1,
        depthwise: bool | Sequence[bool] = False,
        final_act: bool = True,
        pool: str | None = None,
        pool_at: Sequence[int] | None = None,
        pool_size: int = 2,
        skip_from: int | None = None,
        in_channels: int = 1,
        num_classes: int = DEFAULT_NUM_CLASSES,
        head: str = "pixel",
    ) -> None:
        super().__init__(in_channels, num_classes, head)
        widths = check_widths(widths)
        n = len(widths)
        kernel_sizes = layer_ints("kernel_sizes", kernel_sizes, n)
        for i, k in enumerate(kernel_sizes):
            if k % 2 == 0:
                raise ValueError(f"kernel_sizes[{i}] must be odd to keep the size, found {k}")
        dilations = layer_ints("dilations", dilations, n)
        strides = layer_ints("strides", strides, n)
        depthwise = per_layer("depthwise", depthwise, n)
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, found {pool!r}")
        pool_size = check_positive_int("pool_size", pool_size)
        pool_at = list(range(1, n)) if pool_at is None else list(pool_at)
        if sorted(set(pool_at)) != pool_at or any(not isinstance(i, int) or not 0 <= i < n for i in pool_at):
            raise ValueError(f"pool_at must be increasing layer indices in [0, {n}), found {pool_at!r}")
        if pool == "stitch" and any(s > 1 for s in strides):
            raise ValueError(f"pool='stitch' keeps full resolution and needs strides of 1, found {strides}")
        if skip_from is not None:
            if isinstance(skip_from, bool) or not isinstance(skip_from, int) or not 0 <= skip_from < n - 1:
                raise ValueError(f"skip_from must be a layer index in [0, {n - 1}), found {skip_from!r}")
            if pool is not None or any(s > 1 for s in strides):
                raise ValueError("skip_from needs full resolution throughout: no pool and strides of 1")

        layers = []
        prev = in_channels
        for i, (w, k, d, s, dw) in enumerate(zip(widths, kernel_sizes, dilations, strides, depthwise)):
            if dw and w != prev:
                raise ValueError(f"depthwise layer {i} must keep its {prev} channels, found width {w}")
            last = i == n - 1
            act = final_act or not last
            layers.append(ConvBNAct(prev, w, k, s, d, groups=prev if dw else 1, norm=act, act=act))
            prev = w
        self.output_stride = math.prod(strides)
        if pool == "max":
            self.output_stride *= pool_size ** len(pool_at)
        if skip_from is None:
            self.features = _assemble(layers, pool, pool_at, pool_size)
            self._finish(prev)
        else:
            cut = skip_from + 1
            self.features = nn.Sequential(*layers[:cut], SkipConcat(nn.Sequential(*layers[cut:])))
            self._finish(widths[skip_from] + prev, pooled_channels=prev)

    def head_input(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """A context head behind a skip gets the skipped and the last layer's features apart.

        The same values as the `SkipConcat` output, without building it: the head averages
        only the deep block and concatenates everything once, and autograd adds no zero-padded
        gradient of the whole feature map (docs/notes/2026-12-07-kernel-choices.md).
        """
        skip = self.features[-1]
        if not (isinstance(skip, SkipConcat) and isinstance(self.head, ContextHead)):
            return super().head_input(x)
        early = self.run_blocks(self.features[:-1], x)
        return [early, self.run_blocks(skip.body, early)]


@register_model
def vgg4_dilated(**kwargs) -> VGG:
    """4-layer VGG, 3x3 convs with dilations 1, 2, 4, 8; full resolution, receptive field 31."""
    return VGG(**{"dilations": (1, 2, 4, 8), **kwargs})


@register_model
def vgg7_dilated(**kwargs) -> VGG:
    """7-layer VGG, 3x3 convs with dilations 1, 1, 2, 4, 8, 16, 1; full resolution, receptive field 67."""
    return VGG(**{"widths": VGG7_WIDTHS, "dilations": VGG7_DILATIONS, **kwargs})


@register_model
def vgg7_dilated_context(**kwargs) -> VGG:
    """`vgg7_dilated` with a `ContextHead`: each pixel also sees its features averaged over a 29x29 window."""
    return VGG(**{"widths": VGG7_WIDTHS, "dilations": VGG7_DILATIONS, "head": "context", **kwargs})


@register_model
def vgg4_dilated_context(**kwargs) -> VGG:
    """`vgg4_dilated` with a `ContextHead` (29x29 window means): receptive field 59 in 29,987 parameters."""
    return VGG(**{"dilations": (1, 2, 4, 8), "head": "context", **kwargs})


@register_model
def vgg7_dilated_skip_context(**kwargs) -> VGG:
    """`vgg7_dilated_context` at widths 16-24-32 (x5), its head also reading layer 2 (`SkipConcat`)."""
    return VGG(
        **{
            "widths": VGG7_SLIM_WIDTHS,
            "dilations": VGG7_DILATIONS,
            "skip_from": 1,
            "head": "context",
            **kwargs,
        }
    )


@register_model
def vgg7_dilated_skip16_context(**kwargs) -> VGG:
    """`vgg7_dilated_skip_context` with a 16-channel layer 2, the one its skip carries: 47k parameters."""
    return vgg7_dilated_skip_context(**{"widths": VGG7_SKIP16_WIDTHS, **kwargs})


@register_model
def vgg4_large_kernel(**kwargs) -> VGG:
    """4-layer VGG with kernels 3, 5, 7, 9; full resolution, receptive field 21."""
    return VGG(**{"kernel_sizes": (3, 5, 7, 9), **kwargs})


@register_model
def vgg4_strided(**kwargs) -> VGG:
    """Downsampling baseline: the 4-layer VGG with stride 2 on layers 2-4 (output stride 8)."""
    return VGG(**{"strides": (1, 2, 2, 2), **kwargs})


@register_model
def vgg4_stitch(**kwargs) -> VGG:
    """4-layer VGG, 3x3 convs, shift-and-stitch 2x2 max pooling before layers 2-4; full resolution."""
    return VGG(**{"pool": "stitch", **kwargs})


@register_model
def vgg4_maxpool(**kwargs) -> VGG:
    """Downsampling baseline for `vgg4_stitch`: strided 2x2 max pooling before layers 2-4."""
    return VGG(**{"pool": "max", **kwargs})


@register_model
def vgg4_dilated_wide(**kwargs) -> VGG:
    """`vgg4_dilated` with widths 64-128-256-512."""
    return VGG(**{"widths": WIDE_WIDTHS, "dilations": (1, 2, 4, 8), **kwargs})


@register_model
def vgg4_large_kernel_wide(**kwargs) -> VGG:
    """`vgg4_large_kernel` with widths 64-128-256-512."""
    return VGG(**{"widths": WIDE_WIDTHS, "kernel_sizes": (3, 5, 7, 9), **kwargs})


@register_model
def vgg4_strided_wide(**kwargs) -> VGG:
    """`vgg4_strided` with widths 64-128-256-512."""
    return VGG(**{"widths": WIDE_WIDTHS, "strides": (1, 2, 2, 2), **kwargs})
