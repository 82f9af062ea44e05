"""Layouts: where each image's glyphs go. One function per layout, each returning a `Placement`.

- `"m2nist"` (default), the recipe of the published M2NIST: 2 or 3 slots (equal odds); slot i
  puts a glyph with its left edge drawn from 28*i .. 28*i + 9 and its top from 0 .. H - 28; a
  glyph whose box would cross the right border is dropped, so a third glyph stays only when its
  left edge is 56. About 95% of images hold two glyphs and 5% three; digits seldom touch.
- `"scatter"`, a harder variant: 1, 2 or 3 glyphs (probabilities 1/4, 1/2, 1/4) anywhere inside
  the canvas, free to touch and overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from zoo.data.glyphs import GLYPH

LAYOUTS = ("m2nist", "scatter")
DEFAULT_LAYOUT = "m2nist"
COUNT_PROBS = (0.25, 0.5, 0.25)  # scatter layout: 1, 2, 3 digits per image
SLOT_JITTER = 10  # m2nist layout: slot i's left edge is 28*i + 0..9


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


def place(
    layout: str,
    rng: np.random.Generator,
    num_images: int,
    pool: int,
    canvas: tuple[int, int],
    count_probs: Sequence[float] | None = None,
) -> Placement:
    """`num_images` placements by `layout` ("m2nist" or "scatter") from a pool of `pool` glyphs."""
    check_layout(layout, count_probs)
    if layout == "scatter":
        return scatter_layout(rng, num_images, pool, canvas, count_probs or COUNT_PROBS)
    return m2nist_layout(rng, num_images, pool, canvas)
