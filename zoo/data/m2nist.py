"""Reading and writing M2NIST: `combined.npy` (N, 64, 84) uint8 + `segmented.npy` masks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 64, 84
NUM_CLASSES = 11
BACKGROUND = 10
CLASS_NAMES = tuple(str(d) for d in range(10)) + ("background",)
IMAGES_FILE, MASKS_FILE = "combined.npy", "segmented.npy"
DEFAULT_DATA_DIR = (
    Path("datasets") / "m2nist"
)  # the data root's M2NIST folder, relative to the working directory

HOW_TO_GET = (
    "download M2NIST (Kaggle 'multimnistm2nist') into that folder, or generate an equivalent "
    "offline with `python -m zoo.data generate --out DIR`"
)


class M2NISTFormatError(ValueError):
    """A file that is not M2NIST as documented; the message names the file and what was found."""


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; {HOW_TO_GET}")
    try:
        # allow_pickle=False: an .npy holding Python objects must never run code on load
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise M2NISTFormatError(
            f"{path}: not a readable .npy array (truncated or another format): {e}"
        ) from e


def _check_hw(path: Path, shape: tuple, size: tuple[int, int] | None) -> None:
    if size is not None and tuple(shape[1:3]) != tuple(size):
        raise M2NISTFormatError(f"{path}: expected images of {size[0]}x{size[1]}, found shape {shape}")


def masks_to_labels(masks: np.ndarray, path: Path | str = "masks") -> np.ndarray:
    """One-hot (N, H, W, 11) of any integer, bool or float dtype, or a label map (N, H, W) -> uint8 labels.

    Raises M2NISTFormatError on NaN, values other than 0/1 in a one-hot mask, pixels with no
    class or several, and labels outside 0..10. Nothing is repaired.
    """
    if not (np.issubdtype(masks.dtype, np.number) or masks.dtype == np.bool_):
        raise M2NISTFormatError(f"{path}: expected a numeric or bool mask array, found dtype {masks.dtype}")
    if np.issubdtype(masks.dtype, np.floating) and np.isnan(masks).any():
        raise M2NISTFormatError(f"{path}: masks contain NaN ({int(np.isnan(masks).sum())} values)")
    if masks.ndim == 4:
        if masks.shape[-1] != NUM_CLASSES:
            raise M2NISTFormatError(
                f"{path}: expected one-hot masks (N, H, W, {NUM_CLASSES}), found shape {masks.shape}"
            )
        binary = (masks == 0) | (masks == 1)
        if not binary.all():
            bad = masks[~binary]
            raise M2NISTFormatError(
                f"{path}: one-hot masks must hold only 0 and 1, found {bad.size} other values "
                f"(e.g. {bad.flat[0]!r})"
            )
        per_pixel = masks.astype(bool).sum(axis=-1)
        for count, what in ((0, "no class"), (2, "two or more classes")):
            wrong = per_pixel == 0 if count == 0 else per_pixel >= 2
            if wrong.any():
                first = tuple(int(i) for i in np.argwhere(wrong)[0])
                raise M2NISTFormatError(
                    f"{path}: masks are not one-hot: {int(wrong.sum())} pixel(s) have {what} "
                    f"(first at image, row, col = {first})"
                )
        return masks.argmax(axis=-1).astype(np.uint8)
    if masks.ndim == 3:
        if np.issubdtype(masks.dtype, np.floating) and not (masks == np.round(masks)).all():
            raise M2NISTFormatError(f"{path}: a label map must hold whole numbers, found fractions")
        lo, hi = (masks.min(), masks.max()) if masks.size else (0, 0)
        if lo < 0 or hi > BACKGROUND:
            raise M2NISTFormatError(f"{path}: label values must lie in 0..{BACKGROUND}, found {lo}..{hi}")
        return masks.astype(np.uint8)
    raise M2NISTFormatError(
        f"{path}: expected masks of shape (N, H, W, {NUM_CLASSES}) or (N, H, W), found shape {masks.shape}"
    )


def load_m2nist(
    directory: str | Path, size: tuple[int, int] | None = (HEIGHT, WIDTH)
) -> tuple[np.ndarray, np.ndarray]:
    """Read `combined.npy` + `segmented.npy` from `directory`.

    Returns images uint8 (N, H, W) and labels uint8 (N, H, W) with values 0..10 (10 = background).

    Args:
        size: the (H, W) every image must have; None accepts any.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory; {HOW_TO_GET}")
    images_path, masks_path = directory / IMAGES_FILE, directory / MASKS_FILE
    images, masks = _read_npy(images_path), _read_npy(masks_path)
    if images.ndim != 3:
        raise M2NISTFormatError(
            f"{images_path}: expected images of shape (N, H, W), found shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise M2NISTFormatError(f"{images_path}: expected dtype uint8 (0..255), found {images.dtype}")
    _check_hw(images_path, images.shape, size)
    if masks.ndim not in (3, 4) or masks.shape[:3] != images.shape:
        if masks.ndim in (3, 4) and masks.shape[0] != images.shape[0]:
            raise M2NISTFormatError(
                f"{masks_path}: holds {masks.shape[0]} masks but {images_path.name} holds "
                f"{images.shape[0]} images"
            )
        raise M2NISTFormatError(
            f"{masks_path}: expected masks of shape {images.shape + (NUM_CLASSES,)} or {images.shape} "
            f"to match {images_path.name}, found {masks.shape}"
        )
    return images, masks_to_labels(masks, masks_path)


def labels_to_one_hot(labels: np.ndarray, dtype: np.dtype = np.uint8) -> np.ndarray:
    """Label map (N, H, W) -> one-hot (N, H, W, 11), channel 10 = background."""
    return (labels[..., None] == np.arange(NUM_CLASSES, dtype=labels.dtype)).astype(dtype)


def save_m2nist(directory: str | Path, images: np.ndarray, labels: np.ndarray, one_hot: bool = True) -> Path:
    """Write `combined.npy` and `segmented.npy` (one-hot uint8 as published, or a label map)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / IMAGES_FILE, np.ascontiguousarray(images, dtype=np.uint8))
    masks = labels_to_one_hot(labels) if one_hot else labels.astype(np.uint8)
    np.save(directory / MASKS_FILE, masks)
    return directory
