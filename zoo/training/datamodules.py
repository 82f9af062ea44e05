"""The Lightning face of the data: M2NIST and your own folders, thin over `zoo.data`.

M2NIST comes from `zoo.data.datasets`, folders from `zoo.data.folder`: the work is in those plain modules.

Each data module tells the model what the data is (`num_classes`, `in_channels`,
`class_names`, `background`, `normalization`; train.py links them into the model's
arguments, so they are never typed twice) and which score picks the best checkpoint (`monitor`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
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
from zoo.data.folder import (
    SPLIT_FILE,
    FolderDataset,
    channel_stats,
    crops_covering,
    detect_layout,
    scan_folder,
    split_pairs,
    write_split_file,
)
from zoo.data.glyphs import glyph_pools
from zoo.data.layouts import DEFAULT_LAYOUT, check_layout
from zoo.data.m2nist import BACKGROUND, CLASS_NAMES, DEFAULT_DATA_DIR, NUM_CLASSES
from zoo.data.splits import DEFAULT_SIZES
from zoo.data.transforms import folder_transform, train_transform

log = logging.getLogger(__name__)


class SegmentationData(pl.LightningDataModule):
    """What every data module shares: seeded, resumable, DDP-aware loaders over `dataset(split)`."""

    num_classes: int
    in_channels: int
    class_names: list[str]
    background: int | None = None  # a class left out of "mean IoU without background"
    normalization: dict | None = None  # per-channel mean/std after x / 255, or None
    monitor = "val/miou"  # the validation score that picks the best checkpoint
    source = ""  # one line: where the data came from

    def dataset(self, split: str):
        raise NotImplementedError

    @staticmethod
    def check_loader_arguments(batch_size: int, num_workers: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, found {num_workers}")

    def eval_batch_size(self, split: str) -> int:
        return self.hparams.batch_size

    def class_pixel_counts(self) -> list[int]:
        """The training pixels of each class (for median-frequency class weights)."""
        raise NotImplementedError

    @property
    def train_seed(self) -> int:
        return self.hparams.seed

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
            batch_size=h.batch_size if shuffle else self.eval_batch_size(split),
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


class M2NISTDataModule(SegmentationData):
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
        augment: apply `zoo.data.transforms.train_transform(augment_strength)` to training images
            (affine + elastic); None (default): off, as digits are not symmetric and the recipe
            does without.
        digits: glyph source for the generator (see `zoo.data.load_glyphs`).
        layout: how generated images place their glyphs: "m2nist", the published set's recipe
            (2-3 digits in slots, seldom touching), or "scatter", the harder variant (1-3 digits
            anywhere, touching and overlapping); see `zoo.data.layouts`.
        recompose: generated data only: compose `train_size` new training images every epoch
            from the training glyphs (`RecomposedM2NIST`); validation and test stay fixed.
            None (default): on where the data is generated, off where `data_dir` holds files.
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
        augment: bool | None = None,
        augment_strength: float = 1.0,
        digits: str | None = None,
        recompose: bool | None = None,
        train_seed: int | None = None,
        recompose_counts: tuple[float, float, float] | None = None,
        layout: str = DEFAULT_LAYOUT,
    ) -> None:
        super().__init__()
        self.check_loader_arguments(batch_size, num_workers)
        if recompose is None:  # fresh images each epoch where they are generated; files are what they are
            recompose = not holds_files(data_dir)
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
        self.hparams.recompose = recompose  # as resolved above (None: by what data_dir holds)
        self.hparams.augment = bool(augment)
        self.splits: dict | None = None
        self.source = ""

    num_classes, in_channels, class_names, background = NUM_CLASSES, 1, list(CLASS_NAMES), BACKGROUND
    monitor = "val/digit_miou"  # M2NIST keeps its digit score: the mean IoU without background

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

    def class_pixel_counts(self) -> list[int]:
        self.setup()
        return np.bincount(self.splits["train"][1].reshape(-1), minlength=NUM_CLASSES).tolist()

    def report_samples(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The first `n` test images (uint8) and their labels, for the training report."""
        self.setup()
        images, labels = self.splits["test"]
        return list(images[:n]), list(labels[:n])


class FolderSegmentation(SegmentationData):
    """Your own images and masks, any size, grayscale or RGB, any number of classes.

    Layouts (detected, and reported in one log line): `root/images` + `root/masks` (val and
    test split off by seeded fractions); `root/{train,val,test}/{images,masks}`; or explicit
    per-split folders (`train_images`, `train_masks`, `val_images`, ...), e.g. CamVid's
    `train/` + `trainannot/`. Pairs match by file stem. The whole folder is checked when the
    module is made (`zoo.data.folder.scan_folder`): bad input fails before training starts.
    Training draws random `crop_size` crops (padded with the ignore label where an image is
    smaller); validation and test run on whole images at their own size.

    Args:
        root: the data folder (or None with explicit folders).
        mask_values: the stored mask value of each class, e.g. [0, 255] for masks kept as 0/255.
        ignore_index: a stored mask value (e.g. a void label) left out of the loss and every metric.
        classes: the class names (their count is the number of classes).
        palette: colour masks: the [r, g, b] of each class.
        mask_suffix: what a mask's file stem adds to its image's, e.g. "_mask".
        crop_size: the side of a training crop; None trains on whole images (all of one size).
        crops_per_epoch: training crops an epoch (default: as many as cover every training pixel
            about once, `zoo.data.folder.crops_covering`; one per image without `crop_size`).
        normalize: "scale" (x / 255) or "mean_std" (then per channel (x / 255 - mean) / std, the
            statistics computed once from the training images and recorded with the weights).
        augment: flips and 90-degree rotations (`zoo.data.transforms.folder_transform`); None
            (default): on.
        color_jitter: colour jitter on RGB images (with `augment`).
        val_fraction, test_fraction: the share of images split off where the layout has no such folder.
        split_file: a `splits.json` of an earlier run (image stems per split), to replay its split;
            every fit writes its own into its run folder.

    The arguments it shares with `M2NISTDataModule` (batch_size, num_workers, seed, the
    fractions, augment) have the same defaults: LightningCLI keeps such values when `--data`
    switches modules, so a default that differs between the data sets is None in both, resolved
    by each module (augment: on here, off for M2NIST).
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        mask_values: list[int] | None = None,
        ignore_index: int | None = None,
        classes: list[str] | None = None,
        palette: list[list[int]] | None = None,
        mask_suffix: str = "",
        crop_size: int | None = 128,
        crops_per_epoch: int | None = None,
        normalize: str = "scale",
        augment: bool | None = None,
        color_jitter: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_file: str | None = None,
        train_images: str | None = None,
        train_masks: str | None = None,
        val_images: str | None = None,
        val_masks: str | None = None,
        test_images: str | None = None,
        test_masks: str | None = None,
    ) -> None:
        super().__init__()
        self.check_loader_arguments(batch_size, num_workers)
        if crop_size is not None and crop_size < 1:
            raise ValueError(f"crop_size must be >= 1 or None, found {crop_size}")
        if normalize not in ("scale", "mean_std"):
            raise ValueError(f"normalize must be 'scale' or 'mean_std', found {normalize!r}")
        self.save_hyperparameters()
        self.hparams.augment = augment is None or augment  # None: on (see the class docstring)
        explicit = {
            "train": (train_images, train_masks),
            "val": (val_images, val_masks),
            "test": (test_images, test_masks),
        }
        layout, pairs = detect_layout(root, explicit, mask_suffix)
        fractions = {"val": val_fraction, "test": test_fraction}
        self.pairs = split_pairs(pairs, fractions, seed, split_file)
        self.scan = scan_folder(self.pairs, layout, mask_values, ignore_index, classes, palette)
        if crop_size is None and len(set(self.scan.sizes["train"])) > 1:
            raise ValueError(
                f"the training images come in {len(set(self.scan.sizes['train']))} sizes: give "
                "--data.crop_size to train on crops of one size"
            )
        self.num_classes, self.in_channels = self.scan.num_classes, self.scan.in_channels
        self.class_names = self.scan.class_names
        if normalize == "mean_std":
            mean, std = channel_stats(self.pairs["train"])
            self.normalization = {"scale": 255.0, "mean": mean, "std": std}
        self.source = f"folder data, {self.scan.describe()}"
        log.info("data: %s", self.source)

    def setup(self, stage: str | None = None) -> None:
        # the split goes into the run folder, so `--data.split_file` replays it exactly
        if stage == "fit" and self.trainer is not None and self.trainer.is_global_zero:
            write_split_file(self.pairs, Path(self.trainer.default_root_dir) / SPLIT_FILE)

    def eval_batch_size(self, split: str) -> int:
        # whole images: a batch needs one size
        return self.hparams.batch_size if len(set(self.scan.sizes[split])) == 1 else 1

    def dataset(self, split: str) -> FolderDataset:
        """The `split` as a dataset: random augmented crops for training, whole images otherwise."""
        h = self.hparams
        common = dict(mask_values=self.scan.mask_values, normalization=self.normalization, palette=h.palette)
        if split != "train":
            return FolderDataset(self.pairs[split], **common)
        transform = None
        if h.augment:
            transform = folder_transform(self.in_channels == 3, color_jitter=h.color_jitter, square=True)
        return FolderDataset(
            self.pairs["train"],
            crop_size=h.crop_size,
            transform=transform,
            seed=self.train_seed,
            length=h.crops_per_epoch or crops_covering(self.scan.sizes["train"], h.crop_size),
            **common,
        )

    def class_pixel_counts(self) -> list[int]:
        return self.scan.class_pixels

    def report_samples(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The first `n` test images (uint8) and their labels, for the training report."""
        test = self.dataset("test")
        samples = [test.sample(i) for i in range(min(n, len(test)))]
        return [s[0] for s in samples], [s[1] for s in samples]
