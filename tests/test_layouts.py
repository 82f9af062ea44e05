"""The two layouts of generated M2NIST, and the statistics that tell them apart.

Expected values come from the published recipe (FACTS.md): 2 or 3 slots with equal odds; slot i's
left edge uniform on 28*i .. 28*i + 9, its top on 0 .. 36; a glyph crossing the right border is
dropped. Tolerances are four binomial standard deviations.
"""

import json
import math

import numpy as np
import pytest

from zoo.data import (
    BACKGROUND,
    compose,
    generate_splits,
    load_splits,
    save_m2nist,
    write_generated,
)
from zoo.data.__main__ import main as data_cli
from zoo.data.datasets import RecomposedM2NIST
from zoo.data.layouts import LAYOUTS
from zoo.data.stats import layout_stats
from zoo.training.datamodules import M2NISTDataModule

N = 4000


def binomial_tolerance(p: float, n: int) -> float:
    return 4 * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def solid_placements():
    """N images of solid 28x28 glyphs in the m2nist layout, with each pixel's owning glyph."""
    pool = np.full((5, 28, 28), 200, np.uint8)
    images, labels, owners = compose(pool, np.arange(5), N, np.random.default_rng(11), owners=True)
    return images, owners


def test_m2nist_layout_glyph_counts(solid_placements):
    _, owners = solid_placements
    # each slot starts right of the one before it ends minus 9 px, so every placed glyph owns pixels
    counts = np.array([len(np.unique(o[o != 255])) for o in owners])
    p3 = 0.5 * (1 / 10)  # three slots drawn, and the third's left edge is 56 (the only one that fits)
    assert set(np.unique(counts)) <= {2, 3}
    assert (counts == 3).mean() == pytest.approx(p3, abs=binomial_tolerance(p3, N))


def test_m2nist_layout_edges(solid_placements):
    images, owners = solid_placements
    slot = [[(np.nonzero(o == j)) for o in owners] for j in range(3)]
    left0 = np.array([cols.min() for rows, cols in slot[0]])
    top0 = np.array([rows.min() for rows, cols in slot[0]])
    left1 = np.array([cols.min() for rows, cols in slot[1]])  # slot 1 is never covered on its left edge
    left2 = [cols.min() for rows, cols in slot[2] if cols.size]
    assert set(np.unique(left0)) == set(range(10)) and set(np.unique(left1)) == set(range(28, 38))
    assert set(np.unique(top0)) == set(range(37))  # 37 values, ~108 each: all seen
    assert set(left2) == {56}
    for value in range(10):  # uniform: each left edge a tenth of the time
        assert (left0 == value).mean() == pytest.approx(0.1, abs=binomial_tolerance(0.1, N))
    # the image's leftmost ink is slot 0's left edge: nothing is ever placed further left
    assert (np.argmax(images.any(axis=1), axis=1) == left0).all()


def test_m2nist_layout_digit_statistics():
    # digits are drawn at random per glyph from a balanced pool (400 per digit in train):
    # two glyphs share a digit with p 1/10, three hold one distinct digit with p 1/100
    labels = generate_splits({"train": N}, seed=5)["train"][1]
    stats = layout_stats(labels)
    p_three = 0.05
    single = (1 - p_three) * 0.1 + p_three * 0.01
    distinct = (1 - p_three) * (2 - 0.1) + p_three * 10 * (1 - 0.9**3)
    assert stats["single_class"] == pytest.approx(single, abs=binomial_tolerance(single, N))
    # distinct classes per image: at most 3, sd below 0.5, so 4 sd of the mean is 2 / sqrt(N)
    assert stats["classes_mean"] == pytest.approx(distinct, abs=2 / math.sqrt(N))
    # the published set's own figures: digits almost never touch, about 94% background
    assert stats["touching"] < 0.01 and 0.93 < stats["background"] < 0.955


def test_scatter_layout_is_the_harder_variant():
    labels = generate_splits({"test": 500}, seed=0, layout="scatter")["test"][1]
    stats = layout_stats(labels)
    assert stats["touching"] > 0.1 and stats["single_class"] > 0.2  # some images hold one glyph


def test_layout_stats_on_hand_built_maps():
    bg = BACKGROUND
    a = np.full((4, 20), bg, np.uint8)
    a[0, 2], a[1, 3] = 3, 5  # diagonal neighbours: one blob of two classes (8-connected)
    a[3, 18] = 3  # alone: one class
    b = np.full((4, 20), bg, np.uint8)
    b[2, 14:16] = 7  # leftmost ink in column 14: not "left ink"
    c = np.full((4, 20), bg, np.uint8)  # no digits at all
    stats = layout_stats(np.stack([a, b, c]))
    assert stats["background"] == pytest.approx(1 - 5 / 240)
    assert stats["touching"] == pytest.approx(2 / 5)
    assert stats["left_ink"] == pytest.approx(1 / 3)
    assert stats["classes_mean"] == pytest.approx((2 + 1 + 0) / 3)
    assert stats["single_class"] == pytest.approx(1 / 3)
    d = np.full((1, 3, 20), bg, np.uint8)
    d[0, 0, 13], d[0, 2, 13] = 4, 6  # two rows apart: two blobs, no touching; column 13 is "left"
    assert layout_stats(d)["touching"] == 0 and layout_stats(d)["left_ink"] == 1
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        layout_stats(a)
    with pytest.raises(ValueError, match="0..10"):
        layout_stats(np.full((1, 2, 2), 11, np.uint8))


def test_stats_cli_reads_a_folder(tmp_path, capsys):
    labels = np.full((2, 64, 84), BACKGROUND, np.uint8)
    labels[0, 10:12, 5:8] = 2  # 6 pixels, left ink
    labels[1, 30, 40] = 9
    images = np.where(labels == BACKGROUND, 0, 255).astype(np.uint8)
    save_m2nist(tmp_path, images, labels)
    assert data_cli(["stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| images with ink in columns 0-13"))
    assert row.split("|")[2].strip() == "0.7270" and row.split("|")[3].strip() == "0.5000"
    assert "| background share of pixels | 0.9425 | 0.9993 |" in out  # 1 - 7 / 10752
    assert data_cli(["stats", "--layout", "m2nist"]) == 0 and "m2nist (test)" in capsys.readouterr().out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_same_bytes_and_disjoint_pools(layout):
    a = generate_splits({"train": 30, "test": 20}, seed=4, layout=layout)
    b = generate_splits({"train": 30, "test": 20}, seed=4, layout=layout)
    assert all(x.tobytes() == y.tobytes() for s in a for x, y in zip(a[s], b[s]))
    other = "scatter" if layout == "m2nist" else "m2nist"
    assert a["test"][0].tobytes() != generate_splits({"test": 20}, seed=4, layout=other)["test"][0].tobytes()


def test_unknown_layout_and_misused_options_are_errors(tmp_path):
    pool = np.full((2, 28, 28), 200, np.uint8)
    for call in (
        lambda: compose(pool, np.arange(2), 1, np.random.default_rng(0), layout="grid"),
        lambda: generate_splits({"test": 1}, layout="grid"),
        lambda: RecomposedM2NIST(pool, np.arange(2), 4, layout="grid"),
        lambda: M2NISTDataModule(data_dir=None, layout="grid"),
    ):
        with pytest.raises(ValueError, match="layout must be one of 'm2nist', 'scatter', found 'grid'"):
            call()
    with pytest.raises(ValueError, match="recompose_counts.*'scatter' layout"):
        M2NISTDataModule(data_dir=None, recompose=True, recompose_counts=(0, 0.5, 0.5))
    with pytest.raises(ValueError, match="count_probs.*'scatter' layout"):
        RecomposedM2NIST(pool, np.arange(2), 4, count_probs=(1, 0, 0))
    M2NISTDataModule(data_dir=None, recompose=True, recompose_counts=(0, 0.5, 0.5), layout="scatter")


def test_folders_record_their_layout(tmp_path):
    sizes = {"train": 4, "val": 2, "test": 2}
    write_generated(tmp_path, sizes, seed=1, layout="scatter")
    splits, source = load_splits(tmp_path, layout="scatter")
    assert "scatter layout" in source
    expected = generate_splits(sizes, seed=1, layout="scatter")
    assert all(np.array_equal(splits[s][0], expected[s][0]) for s in sizes)
    with pytest.raises(ValueError, match="holds the 'scatter' layout.*layout='m2nist'"):
        load_splits(tmp_path)  # the default layout is m2nist
    # a folder written before layouts existed records none: it holds the scatter layout
    recipe = json.loads((tmp_path / "splits.json").read_text())
    assert recipe.pop("layout") == "scatter"
    (tmp_path / "splits.json").write_text(json.dumps(recipe))
    assert load_splits(tmp_path, layout="scatter")[0]
    with pytest.raises(ValueError, match="holds the 'scatter' layout"):
        load_splits(tmp_path, layout="m2nist")


def test_recomposed_images_follow_the_layout():
    pool = np.full((3, 28, 28), 200, np.uint8)
    data = RecomposedM2NIST(pool, np.array([1, 2, 3]), 200, seed=0)
    lefts = [np.argmax(data.sample(i, 0)[0].any(axis=0)) for i in range(200)]
    assert set(lefts) <= set(range(10))  # slot 0's left edge, every time
    scatter = RecomposedM2NIST(pool, np.array([1, 2, 3]), 200, seed=0, layout="scatter")
    assert max(np.argmax(scatter.sample(i, 0)[0].any(axis=0)) for i in range(200)) > 9
