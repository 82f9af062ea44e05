"""Reusable layers: same-size convolutions, stride-1 pooling, shift-and-stitch pooling, skips, heads."""

from zoo.layers.conv import Conv2d, ConvBNAct, avoid_bf16_conv_fault, same_padding
from zoo.layers.heads import ClassifyHead, ContextHead, PixelHead, make_head, pixel_head_from_classifier
from zoo.layers.pool import BoxMean
from zoo.layers.shift_stitch import ShiftStitch, batch_to_space, space_to_batch
from zoo.layers.skip import SkipConcat

__all__ = [
    "BoxMean",
    "ClassifyHead",
    "ContextHead",
    "Conv2d",
    "ConvBNAct",
    "PixelHead",
    "ShiftStitch",
    "SkipConcat",
    "avoid_bf16_conv_fault",
    "batch_to_space",
    "make_head",
    "pixel_head_from_classifier",
    "same_padding",
    "space_to_batch",
]
