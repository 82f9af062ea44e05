"""Your own folders of images and masks: finding the pairs, checking them, and the dataset.

Plain NumPy, Pillow and PyTorch; `zoo.data.folder_module.FolderSegmentation` is the Lightning
face. Everything a training run could trip on later is checked by `scan_folder` first: pairs,
sizes, channel counts and every mask value, so bad input is an error naming the file before
the first step, never a crash at epoch 3.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.cards import IGNORE_INDEX
from zoo.preprocess import SCALE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
SPLITS = ("train", "val", "test")
SPLIT_FILE = "splits.json"

Pair = tuple[Path, Path]  # (image, mask)


class FolderDataError(ValueError):
    """A folder of images and masks that cannot be trained on as it is; the message names the file."""


def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FolderDataError(f"{folder} is not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in files:
            raise FolderDataError(
                f"{folder} holds two files with the stem {path.stem!r}: {files[path.stem].name} and "
                f"{path.name}"
            )
        files[path.stem] = path
    return files


def _names(stems: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(sorted(stems)[:most])
    return shown + (f" and {len(stems) - most} more" if len(stems) > most else "")


def find_pairs(images_dir: str | Path, masks_dir: str | Path, mask_suffix: str = "") -> list[Pair]:
    """Image and mask files matched by stem (a mask's stem may end in `mask_suffix`, e.g. "_mask").

    Any image without a mask, or mask without an image, is an error naming them.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _image_files(images_dir)
    masks = {
        stem.removesuffix(mask_suffix) if mask_suffix else stem: p
        for stem, p in _image_files(masks_dir).items()
    }
    if not images:
        raise FolderDataError(f"{images_dir} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    no_mask, no_image = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if no_mask:
        raise FolderDataError(
            f"{len(no_mask)} image(s) in {images_dir} have no mask in {masks_dir} "
            f"(matched by file stem{f' + {mask_suffix!r}' if mask_suffix else ''}): {_names(no_mask)}"
        )
    if no_image:
        raise FolderDataError(
            f"{len(no_image)} mask(s) in {masks_dir} have no image in {images_dir}: {_names(no_image)}"
        )
    return [(images[s], masks[s]) for s in sorted(images)]


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FolderDataError(f"cannot read {path}: {e}") from None


def read_image(path: str | Path) -> np.ndarray:
    """A uint8 image, (H, W) grayscale or (H, W, 3) RGB, from any file Pillow reads or a `.npy`."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        image = _load_npy(path)
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
            raise FolderDataError(
                f"{path}: expected a uint8 array (H, W) or (H, W, 3), found {image.dtype} {image.shape}"
            )
        return image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "P":
                img = img.convert("RGB")  # a palette holds colours: the image is RGB
            elif mode == "1":
                img = img.convert("L")
            elif mode not in ("L", "RGB"):
                raise FolderDataError(
                    f"{path}: image mode {mode!r}; expected 8-bit grayscale (L) or RGB "
                    "(convert 16-bit or alpha-channel images first)"
                )
            return np.array(img)  # a writable copy: tensors are made from it
    except FolderDataError:
        raise
    except Exception as e:  # Pillow raises many kinds for a broken or foreign file
        raise FolderDataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def image_header(path: Path) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) of an image file, without decoding its pixels where the format allows."""
    if path.suffix.lower() == ".npy":
        image = read_image(path)
        return (1 if image.ndim == 2 else 3), image.shape[:2]
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode, (w, h) = img.mode, img.size
    except Exception as e:
        raise FolderDataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    if mode not in ("L", "1", "RGB", "P"):
        raise FolderDataError(f"{path}: image mode {mode!r}; expected 8-bit grayscale (L) or RGB")
    return (1 if mode in ("L", "1") else 3), (h, w)


def read_mask(path: str | Path, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Stored mask values (H, W): a class-index image (mode L, P or I), an integer `.npy`, or a
    colour mask mapped through `palette` (one RGB triple per class; colour c -> its index)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        mask = _load_npy(path)
        if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
            raise FolderDataError(
                f"{path}: expected an integer mask array (H, W), found {mask.dtype} {mask.shape}"
            )
        return mask
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "RGB" or mode == "RGBA":
                if palette is None:
                    raise FolderDataError(
                        f"{path} is a colour mask: pass the colour of each class as --data.palette "
                        "[[r, g, b], ...] (or store class indices as a grayscale or palette image)"
                    )
                return _colours_to_classes(np.asarray(img.convert("RGB")), palette, path)
            if mode not in ("L", "P", "I", "I;16", "1"):
                raise FolderDataError(
                    f"{path}: mask mode {mode!r}; expected class indices (L, P or I) or RGB with a palette"
                )
            return np.asarray(img).astype(np.int64)
    except FolderDataError:
        raise
    except Exception as e:
        raise FolderDataError(f"cannot read mask {path}: {type(e).__name__}: {e}") from None


def _colours_to_classes(rgb: np.ndarray, palette: Sequence[Sequence[int]], path: Path) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(palette)}
    found, inverse = np.unique(codes, return_inverse=True)
    unknown = [c for c in found.tolist() if c not in table]
    if unknown:
        colours = [[c >> 16, (c >> 8) & 255, c & 255] for c in unknown[:5]]
        raise FolderDataError(
            f"{path}: colour(s) {colours} are not in the palette {list(map(list, palette))}"
        )
    return np.array([table[c] for c in found.tolist()], dtype=np.int64)[inverse].reshape(codes.shape)


@dataclass(frozen=True)
class MaskValues:
    """How stored mask values become labels: `values[i]` -> class i, `ignore` -> IGNORE_INDEX.

    With `values` None the stored values are the class indices 0..num_classes-1 themselves.
    """

    num_classes: int
    values: tuple[int, ...] | None = None
    ignore: int | None = None

    def to_labels(self, stored: np.ndarray) -> np.ndarray:
        """int64 labels (H, W): classes 0..C-1 and IGNORE_INDEX."""
        stored = stored.astype(np.int64, copy=False)
        if self.values is None:
            labels = stored.copy()
        else:
            labels = np.full(stored.shape, -1, dtype=np.int64)
            for c, v in enumerate(self.values):
                labels[stored == v] = c
        if self.ignore is not None:
            labels[stored == self.ignore] = IGNORE_INDEX
        return labels

    def stray(self, found: np.ndarray) -> list[int]:
        """The stored values in `found` that are neither a class nor the ignore label."""
        known = set(range(self.num_classes)) if self.values is None else set(self.values)
        if self.ignore is not None:
            known.add(self.ignore)
        return [int(v) for v in found if int(v) not in known]


@dataclass
class FolderScan:
    """What `scan_folder` found: the pairs of each split, and what the data says about the model."""

    splits: dict[str, list[Pair]]
    layout: str
    in_channels: int
    num_classes: int
    mask_values: MaskValues
    class_names: list[str]
    class_pixels: list[int]  # training pixels of each class
    sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def describe(self) -> str:
        counts = ", ".join(f"{s} {len(p)}" for s, p in self.splits.items())
        shapes = sorted({hw for sizes in self.sizes.values() for hw in sizes})
        size = f"{shapes[0][0]}x{shapes[0][1]}" if len(shapes) == 1 else f"{len(shapes)} sizes"
        kind = "grayscale" if self.in_channels == 1 else "RGB"
        return f"{self.layout}: {counts} images ({kind}, {size}), {self.num_classes} classes"


def detect_layout(
    root: str | Path | None,
    explicit: dict[str, tuple[str | None, str | None]] | None = None,
    mask_suffix: str = "",
) -> tuple[str, dict[str, list[Pair] | None]]:
    """Which of the three layouts a folder has, and its pairs per split (None: split off later).

    - explicit per-split folders (`explicit`: split -> (images dir, masks dir)), e.g. CamVid's
      `train/` + `trainannot/`;
    - `root/{train,val,test}/{images,masks}` (val and test optional);
    - `root/images` + `root/masks`, all splits drawn from one pool.
    """
    explicit = {s: dirs for s, dirs in (explicit or {}).items() if any(dirs)}
    if explicit:
        for split, (images, masks) in explicit.items():
            if not (images and masks):
                raise FolderDataError(
                    f"the {split} split needs both --data.{split}_images and --data.{split}_masks"
                )
        if "train" not in explicit:
            raise FolderDataError("explicit folders need at least --data.train_images and --data.train_masks")
        pairs = {s: find_pairs(*explicit[s], mask_suffix) if s in explicit else None for s in SPLITS}
        return "explicit folders", pairs
    if root is None:
        raise FolderDataError("give --data.root DIR, or --data.train_images and --data.train_masks")
    root = Path(root)
    if not root.is_dir():
        raise FolderDataError(f"data root {root} does not exist")
    if (root / "train" / "images").is_dir():
        pairs = {
            s: find_pairs(root / s / "images", root / s / "masks", mask_suffix)
            if (root / s / "images").is_dir()
            else None
            for s in SPLITS
        }
        return f"{root}/{{train,val,test}}/{{images,masks}}", pairs
    if (root / "images").is_dir():
        return f"{root}/images + {root}/masks", {
            "train": find_pairs(root / "images", root / "masks", mask_suffix),
            "val": None,
            "test": None,
        }
    raise FolderDataError(
        f"no layout found in {root}: expected {root}/images and {root}/masks, "
        f"{root}/train/images (+ masks, val/, test/), or explicit --data.train_images/--data.train_masks"
    )


def split_pairs(
    pairs: dict[str, list[Pair] | None],
    fractions: dict[str, float],
    seed: int,
    split_file: str | Path | None = None,
) -> dict[str, list[Pair]]:
    """Fill the splits left None from the training pairs: by a split file (image stems per split),
    else a seeded shuffle cut by `fractions` ("val", "test")."""
    pool = pairs["train"]
    missing = [s for s in ("val", "test") if pairs[s] is None]
    if not missing:
        return dict(pairs)
    if split_file is not None:
        try:
            recorded = json.loads(Path(split_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FolderDataError(f"cannot read the split file {split_file}: {e}") from None
        if not isinstance(recorded, dict):
            raise FolderDataError(
                f"{split_file} holds no split: expected {{'train': [stems], 'val': [...], 'test': [...]}}"
            )
        by_stem = {img.stem: (img, mask) for img, mask in pool}
        out = dict(pairs)
        for s in ("train", *missing):
            stems = recorded.get(s)
            if stems is None:
                raise FolderDataError(f"{split_file} lists no {s!r} split")
            unknown = [t for t in stems if t not in by_stem]
            if unknown:
                raise FolderDataError(f"{split_file} names image(s) not in the folder: {_names(unknown)}")
            out[s] = [by_stem[t] for t in stems]
        return out
    order = np.random.default_rng(seed).permutation(len(pool))
    counts = {s: round(len(pool) * fractions[s]) for s in missing}
    if any(n < 1 for n in counts.values()) or sum(counts.values()) >= len(pool):
        raise FolderDataError(
            f"cannot split {len(pool)} training images into "
            f"{', '.join(f'{s} {fractions[s]}' for s in missing)}: "
            "give more images, other fractions, or explicit val/test folders"
        )
    out, start = dict(pairs), 0
    for s in missing:
        out[s] = [pool[i] for i in sorted(order[start : start + counts[s]])]
        start += counts[s]
    out["train"] = [pool[i] for i in sorted(order[start:])]
    return out


def write_split_file(splits: dict[str, list[Pair]], path: str | Path) -> Path:
    """The image stems of each split as JSON, so `split_file=` replays the split exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({s: [img.stem for img, _ in p] for s, p in splits.items()}, indent=1) + "\n")
    return path


def scan_folder(
    splits: dict[str, list[Pair]],
    layout: str,
    mask_values: Sequence[int] | None = None,
    ignore_index: int | None = None,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> FolderScan:
    """Check every pair before training: readable files, one channel count, image and mask of the
    same size, and every mask value a class or the ignore label. Counts the training pixels per class.

    The class count comes from `classes`, else `mask_values`, else the stored values, which must
    then be 0..K-1 (masks kept as 0/255 need `mask_values=[0, 255]`).
    """
    channels: dict[int, Path] = {}
    sizes: dict[str, list[tuple[int, int]]] = {}
    for split, pairs in splits.items():
        sizes[split] = []
        for image, _ in pairs:
            c, hw = image_header(image)
            channels.setdefault(c, image)
            sizes[split].append(hw)
    if len(channels) > 1:
        raise FolderDataError(
            f"the folder mixes grayscale and RGB images, e.g. {channels[1]} (grayscale) and "
            f"{channels[3]} (RGB): convert them to one kind"
        )
    stored: dict[Path, np.ndarray] = {}  # each mask's distinct stored values
    counts: dict[str, np.ndarray] = {}
    for split, pairs in splits.items():
        for (image, mask_path), hw in zip(pairs, sizes[split]):
            mask = read_mask(mask_path, palette)
            if mask.shape != hw:
                raise FolderDataError(
                    f"{mask_path} is {mask.shape[0]}x{mask.shape[1]} but its image {image} is {hw[0]}x{hw[1]}"
                )
            if mask.min() < 0:
                raise FolderDataError(f"{mask_path} holds negative values")
            found = np.bincount(mask.reshape(-1))
            stored[mask_path] = np.flatnonzero(found)
            if split == "train":
                counts[mask_path] = found
    if classes is not None:
        num_classes = len(classes)
    elif mask_values is not None:
        num_classes = len(mask_values)
    elif palette is not None:
        num_classes = len(palette)
    else:
        seen = sorted(set(np.concatenate(list(stored.values())).tolist()) - {ignore_index})
        num_classes = max(seen) + 1 if seen else 0
        if seen != list(range(num_classes)):
            path = next(
                p for p, v in stored.items() if set(v.tolist()) - {ignore_index} - set(range(len(seen)))
            )
            raise FolderDataError(
                f"the masks hold the values {seen[:12]}{' ...' if len(seen) > 12 else ''}, which are not "
                f"class indices 0..{len(seen) - 1} (e.g. {path}); pass --data.mask_values {seen[:12]} to map "
                f"them to classes 0..{len(seen) - 1}, or --data.ignore_index for a void label"
            )
    if num_classes < 2:
        raise FolderDataError(f"segmentation needs at least 2 classes, found {num_classes}")
    if mask_values is not None and len(mask_values) != num_classes:
        raise FolderDataError(
            f"{len(mask_values)} mask_values for {num_classes} classes: give one stored value per class"
        )
    if mask_values is not None and ignore_index in mask_values:
        raise FolderDataError(f"ignore_index {ignore_index} is also in mask_values {list(mask_values)}")
    values = MaskValues(
        num_classes, None if mask_values is None else tuple(int(v) for v in mask_values), ignore_index
    )
    for path, found in stored.items():
        stray = values.stray(found)
        if stray:
            expected = list(values.values) if values.values is not None else f"0..{num_classes - 1}"
            raise FolderDataError(
                f"{path} holds mask value(s) {stray[:10]} that are neither a class ({expected}) nor the "
                f"ignore label ({ignore_index}); map stored values to classes with --data.mask_values, e.g. "
                f"{sorted(set(found.tolist()) - {ignore_index})[:12]}, or set --data.ignore_index"
            )
    pixels = np.zeros(num_classes, dtype=np.int64)
    for found in counts.values():
        for v, n in enumerate(found):
            label = v if values.values is None else (values.values.index(v) if v in values.values else -1)
            if n and 0 <= label < num_classes:
                pixels[label] += n
    names = list(classes) if classes is not None else [f"class_{i}" for i in range(num_classes)]
    return FolderScan(
        splits, layout, next(iter(channels)), num_classes, values, names, pixels.tolist(), sizes
    )


def channel_stats(pairs: Sequence[Pair]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the images, in [0, 1] units (x / 255)."""
    total = sq = n = 0
    for image, _ in pairs:
        pixels = read_image(image)
        x = pixels.astype(np.float64).reshape(-1, 1 if pixels.ndim == 2 else 3) / SCALE
        total, sq, n = total + x.sum(0), sq + (x * x).sum(0), n + len(x)
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def crops_covering(sizes: list[tuple[int, int]], crop_size: int | None) -> int:
    """Random crops an epoch that cover every pixel of images of these sizes about once.

    ceil(H / crop) * ceil(W / crop) per image (a 512x512 image: 16 crops of 128); one per image
    when training on whole images (`crop_size` None).
    """
    if crop_size is None:
        return len(sizes)
    return sum(-(-h // crop_size) * -(-w // crop_size) for h, w in sizes)


def random_crop(
    image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A `size` x `size` crop at a random place; an image smaller than that is padded first
    (image with 0, labels with IGNORE_INDEX, so the padding is left out of loss and metrics)."""
    h, w = labels.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2))
        labels = np.pad(labels, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        h, w = labels.shape
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[y : y + size, x : x + size], labels[y : y + size, x : x + size]


class FolderDataset(Dataset):
    """Pairs of files -> (float image (C, H, W), int64 labels (H, W) with IGNORE_INDEX for void).

    `dataset[i, epoch]`: the crop and augmentation of a sample are a function of (`seed`,
    epoch, i) alone, as for `M2NISTDataset`. With `crop_size` each item is a random crop
    (`length` crops an epoch, cycling over the images); without, the whole image at its size.

    Args:
        normalization: {"mean": [...], "std": [...]} in [0, 1] units, applied after x / 255;
            None: x / 255 only.
        transform: an albumentations pipeline for uint8 images and int64 label masks.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        mask_values: MaskValues,
        normalization: dict | None = None,
        crop_size: int | None = None,
        transform=None,
        seed: int = 0,
        length: int | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.pairs, self.mask_values, self.crop_size = list(pairs), mask_values, crop_size
        self.transform, self.seed, self.palette = transform, seed, palette
        self.length = len(self.pairs) if length is None else int(length)
        self.mean = self.std = None
        if normalization and normalization.get("mean") is not None:
            self.mean = torch.tensor(normalization["mean"], dtype=torch.float32)[:, None, None]
            self.std = torch.tensor(normalization["std"], dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return self.length

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i as uint8 (H, W[, 3]) and its labels int64 (H, W)."""
        image_path, mask_path = self.pairs[i % len(self.pairs)]
        return read_image(image_path), self.mask_values.to_labels(read_mask(mask_path, self.palette))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        image, labels = self.sample(i)
        state = np.random.SeedSequence([self.seed, epoch, int(i)]).generate_state(2)
        if self.crop_size is not None:
            image, labels = random_crop(image, labels, self.crop_size, np.random.default_rng(state[0]))
        if self.transform is not None:
            self.transform.set_random_seed(int(state[1]) & 0x7FFFFFFF)
            out = self.transform(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(labels))
            image, labels = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(SCALE)
        x = x[None] if x.dim() == 2 else x.permute(2, 0, 1).contiguous()
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x, torch.from_numpy(np.ascontiguousarray(labels)).long()
