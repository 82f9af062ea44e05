"""M2NIST data: glyph pools, layouts, generated splits, the file format, datasets; own folders.

Read top to bottom:

- `glyphs`: MNIST glyph sources, split per class into disjoint train / val / test pools;
- `layouts`: where glyphs go, one function per layout (`m2nist_layout`, `scatter_layout`);
- `splits`: composing images from a split's pool, generated splits, `splits.json`;
- `m2nist`: the M2NIST file format (`combined.npy`, `segmented.npy`);
- `datasets`: loading the splits (files or generated), datasets and samplers;
- `transforms`: the training augmentation (albumentations);
- `folder`: your own folders of images and masks (layouts, mask values, splits, crops);
- `stats`: layout statistics, to compare a folder with the published set.
"""

from zoo.data.datasets import M2NISTDataset, RecomposedM2NIST, load_splits
from zoo.data.glyphs import glyph_pools, load_glyphs, split_glyphs
from zoo.data.layouts import LAYOUTS, Placement
from zoo.data.m2nist import (
    BACKGROUND,
    CLASS_NAMES,
    NUM_CLASSES,
    M2NISTFormatError,
    labels_to_one_hot,
    load_m2nist,
    masks_to_labels,
    save_m2nist,
)
from zoo.data.splits import compose, generate_m2nist, generate_splits, write_generated

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "LAYOUTS",
    "M2NISTDataset",
    "M2NISTFormatError",
    "NUM_CLASSES",
    "Placement",
    "RecomposedM2NIST",
    "compose",
    "generate_m2nist",
    "generate_splits",
    "glyph_pools",
    "labels_to_one_hot",
    "load_glyphs",
    "load_m2nist",
    "load_splits",
    "masks_to_labels",
    "save_m2nist",
    "split_glyphs",
    "train_transform",
    "write_generated",
]


def __getattr__(name: str):
    # Lightning and albumentations (the `train` extra) load only when asked for
    if name == "M2NISTDataModule":  # moved to the Lightning side
        from zoo._moved import forward_to

        return forward_to(__name__, "zoo.training.datamodules")(name)
    if name == "train_transform":
        from zoo.data.transforms import train_transform

        return train_transform
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
