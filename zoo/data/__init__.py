"""M2NIST: the real format, an offline generator, datasets and a LightningDataModule."""

from zoo.data.generate import (
    compose,
    generate_m2nist,
    generate_splits,
    glyph_pools,
    load_glyphs,
    split_glyphs,
    write_generated,
)
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
from zoo.data.module import M2NISTDataset, RecomposedM2NIST, load_splits

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "M2NISTDataModule",
    "M2NISTDataset",
    "M2NISTFormatError",
    "NUM_CLASSES",
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
    # Lightning and albumentations load only when asked for
    if name == "M2NISTDataModule":
        from zoo.data.datamodule import M2NISTDataModule

        return M2NISTDataModule
    if name == "train_transform":
        from zoo.data.transforms import train_transform

        return train_transform
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
