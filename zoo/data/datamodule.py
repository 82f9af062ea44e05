"""The Lightning face of the M2NIST data: thin, all work is in `zoo.data.datasets`."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from zoo.data.datasets import (
    EpochSampler,
    M2NISTDataset,
    RecomposedM2NIST,
    ShardSampler,
    holds_files,
    load_splits,
)
from zoo.data.glyphs import glyph_pools
from zoo.data.layouts import DEFAULT_LAYOUT, check_layout
from zoo.data.m2nist import DEFAULT_DATA_DIR
from zoo.data.splits import DEFAULT_SIZES
from zoo.data.transforms import train_transform

log = logging.getLogger(__name__)


class M2NISTDataModule(pl.LightningDataModule):
    """M2NIST train / val / test loaders: real files in `data_dir` if present, else generated.

    Batches: images float32 (B, 1, 64, 84) in [0, 1] (`zoo.preprocess.normalize`), masks int64
    (B, 64, 84) with 10 = background. Generated data: train 4000, val 500 and test 500 images
    from disjoint glyph pools (`train_size`, `val_size`, `test_size`), placed by `layout`, all
    from `seed`. Real files: a seeded random split with `val_fraction` and `test_fraction`.

    Args:
        data_dir: folder with `combined.npy` + `segmented.npy` (see `zoo.data.load_m2nist`); the
            default `datasets/m2nist` may be empty (then M2NIST is generated), any other folder
            must exist and hold the files; None always generates.
        batch_size: images per batch, for every split.
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: generation, split and shuffling seed.
        augment: apply `zoo.data.transforms.train_transform(augment_strength)` to training images.
        digits: glyph source for the generator (see `zoo.data.load_glyphs`).
        layout: how generated images place their glyphs: "m2nist", the published set's recipe
            (2-3 digits in slots, seldom touching), or "scatter", the harder variant (1-3 digits
            anywhere, touching and overlapping); see `zoo.data.layouts`.
        recompose: generated data only: compose `train_size` new training images every epoch
            from the training glyphs (`RecomposedM2NIST`); validation and test stay fixed.
        train_seed: seed of the training order, augmentation and recomposed images, if not `seed`
            (a later stage of a run can see new images while evaluating on the same splits).
        recompose_counts: with `recompose` and the scatter layout, the probabilities of 1, 2 and 3
            glyphs per training image (default 1/4, 1/2, 1/4; more glyphs: more touching digits).
    """

    def __init__(
        self,
        data_dir: str | None = str(DEFAULT_DATA_DIR),
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        train_size: int = DEFAULT_SIZES["train"],
        val_size: int = DEFAULT_SIZES["val"],
        test_size: int = DEFAULT_SIZES["test"],
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        augment: bool = True,
        augment_strength: float = 1.0,
        digits: str | None = None,
        recompose: bool = False,
        train_seed: int | None = None,
        recompose_counts: tuple[float, float, float] | None = None,
        layout: str = DEFAULT_LAYOUT,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, found {num_workers}")
        if recompose and holds_files(data_dir):
            raise ValueError(
                f"recompose=True composes new images from the generator's glyphs, but {data_dir} holds "
                f"fixed M2NIST files: turn recompose off, or leave data_dir empty / None to generate"
            )
        check_layout(layout)
        if recompose_counts is not None:
            if not recompose:
                raise ValueError("recompose_counts applies to recomposed images: set recompose=True too")
            check_layout(layout, recompose_counts, "recompose_counts")
        self.save_hyperparameters()
        self.splits: dict | None = None
        self.source = ""

    def prepare_data(self) -> None:
        pass  # nothing to download: the data is on disk or generated

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        h = self.hparams
        self.splits, self.source = load_splits(
            h.data_dir,
            seed=h.seed,
            sizes={"train": h.train_size, "val": h.val_size, "test": h.test_size},
            val_fraction=h.val_fraction,
            test_fraction=h.test_fraction,
            digits=h.digits,
            layout=h.layout,
        )
        log.info("data: %s", self.source)

    def dataset(self, split: str) -> M2NISTDataset:
        """The `split` ("train", "val" or "test") as a dataset; augmented only for training."""
        self.setup()
        h = self.hparams
        if split != "train":
            return M2NISTDataset(*self.splits[split])
        transform = train_transform(h.augment_strength) if h.augment else None
        if h.recompose:
            glyphs, digits = glyph_pools(h.seed, h.digits)["train"]
            return RecomposedM2NIST(
                glyphs,
                digits,
                h.train_size,
                transform=transform,
                seed=self.train_seed,
                layout=h.layout,
                count_probs=h.recompose_counts,
            )
        return M2NISTDataset(*self.splits[split], transform=transform, seed=self.train_seed)

    @property
    def train_seed(self) -> int:
        return self.hparams.seed if self.hparams.train_seed is None else self.hparams.train_seed

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        h = self.hparams
        dataset = self.dataset(split)
        # own the samplers, also under DDP (Lightning keeps a DistributedSampler it is given):
        # training order and augmentation replay exactly on resume, and evaluation counts
        # every image once
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if shuffle:
            sampler = EpochSampler(dataset, num_replicas=world, rank=rank, seed=self.train_seed)
        else:
            sampler = ShardSampler(dataset, num_replicas=world, rank=rank)
        return DataLoader(
            dataset,
            batch_size=h.batch_size,
            sampler=sampler,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
