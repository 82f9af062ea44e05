"""Reusable layers: same-size convolutions, shift-and-stitch pooling, heads."""

from zoo.layers.conv import ConvBNAct, same_padding
from zoo.layers.heads import ClassifyHead, PixelHead, make_head, pixel_head_from_classifier
from zoo.layers.shift_stitch import ShiftStitch, batch_to_space, space_to_batch

__all__ = [
    "ClassifyHead",
    "ConvBNAct",
    "PixelHead",
    "ShiftStitch",
    "batch_to_space",
    "make_head",
    "pixel_head_from_classifier",
    "same_padding",
    "space_to_batch",
]
