"""Where a shipped model's digit errors come from: `python tools/identity_errors.py vgg7_dilated [...]`.

An analysis of the harder `scatter` layout (digits that touch and overlap), with the weights
trained on it (`<model>.scatter`; give `name.tag` for others). The published M2NIST layout has
almost no touching digits (`python -m zoo.data stats`), so most of what follows does not arise there.

On the generated scatter test split: the digit-vs-background IoU (shape), the share of digit pixels given
the wrong digit (identity), and per digit instance (a connected region of one label, 20+ pixels)
whether it is entirely right, partly right or mostly wrong. Where two glyphs overlap, the label
is the brighter one's (the generator's rule): the error rate there is reported apart, since it
caps what any model can reach: the digit mean IoU the model would score if it were right
everywhere else is printed as "overlaps alone". Last, the ink is cut into touching groups
(8-connected components of non-zero pixels): the error rate on groups holding two or more digits
(glyphs that touch or overlap) is reported apart from that on groups holding one, and the
errors are binned by each digit pixel's distance to the nearest pixel of another digit.

Two bounds follow. "Glyph vote": the score if each glyph's pixels (known from the generator, so
an oracle grouping) all took the digit of their mean probabilities: what perfect grouping alone
would win. "Same arrangements": 500 fresh images laid out alike (same counts and positions),
filled with training, validation or test glyphs: whether the errors come from unseen
handwriting or from the layouts themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo  # noqa: E402
from zoo.data import BACKGROUND, NUM_CLASSES  # noqa: E402
from zoo.data.glyphs import SPLITS, glyph_pools  # noqa: E402
from zoo.data.splits import DEFAULT_SIZES, compose, generate_splits  # noqa: E402
from zoo.data.stats import touching_mask  # noqa: E402
from zoo.training.metrics import SegmentationMetrics  # noqa: E402

LAYOUT = "scatter"


def digit_miou(pred: np.ndarray, labels: np.ndarray) -> float:
    metrics = SegmentationMetrics(NUM_CLASSES, BACKGROUND)  # the training code's metric, over the whole split
    metrics.update(torch.from_numpy(pred), torch.from_numpy(labels))
    return float(metrics.compute()["digit_miou"])


def touching_digits(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pixels of one image whose ink group (8-connected non-zero pixels) holds two or more digits.

    Ink is exactly the digit pixels (M2NIST's invariant), so this is `zoo.data.stats`'s blob test.
    """
    if ((image > 0) != (labels != BACKGROUND)).any():
        raise ValueError("expected ink exactly where the labels are digits (M2NIST's invariant)")
    return touching_mask(labels[None])[0]


def contact_distance(labels: np.ndarray) -> np.ndarray:
    """Per digit pixel of one label map, the distance to the nearest pixel of another digit.

    Euclidean, in pixels; inf on background and on digits with no other digit in the image.
    """
    out = np.full(labels.shape, np.inf)
    digit = labels != BACKGROUND
    for d in set(np.unique(labels).tolist()) - {BACKGROUND}:
        other = digit & (labels != d)
        if other.any():
            mine = labels == d
            out[mine] = ndimage.distance_transform_edt(~other)[mine]
    return out


def glyph_vote(probs: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Labels of one image where every glyph's pixels take the digit of their mean probabilities.

    Args:
        probs: (classes, H, W) softmax probabilities; digits are classes 0..9.
        owners: (H, W) glyph index per pixel, 255 on background (`compose(owners=True)`).
    """
    out = probs.argmax(0)
    for j in np.unique(owners[owners != 255]):
        mine = owners == j
        out[mine] = probs[:BACKGROUND, mine].mean(axis=1).argmax()
    return out


def same_arrangements(size: int = 500, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`size` fresh images per glyph pool, laid out alike: images and int64 label maps per split."""
    pools = glyph_pools(seed)
    out = {}
    for split in SPLITS:
        # one generator seed for every pool: the same glyph counts and positions (only the picks,
        # drawn from pools of different sizes, differ; tests/test_tools.py checks the layouts)
        images, labels = compose(*pools[split], size, np.random.default_rng([seed, 99]), layout=LAYOUT)
        out[split] = images, labels.astype(np.int64)
    return out


def main(names: list[str]) -> None:
    # the test split every model card was scored on (generated, seed 0), with glyphs per pixel
    test = {"test": DEFAULT_SIZES["test"]}
    images, labels, inked, owners = generate_splits(test, seed=0, coverage=True, owners=True, layout=LAYOUT)[
        "test"
    ]
    labels = labels.astype(np.int64)
    overlap = inked > 1
    digit = labels != BACKGROUND
    print(f"test split (generated, seed 0): {overlap[digit].mean():.1%} of digit pixels are overlaps")
    touching = np.stack([touching_digits(image, label) for image, label in zip(images, labels)])
    contact = np.stack([contact_distance(label) for label in labels])
    bands = [(0, 1.5), (1.5, 3), (3, 6), (6, 10), (10, np.inf)]
    bins = [(f"[{lo:g}, {hi:g})", digit & (contact >= lo) & (contact < hi)) for lo, hi in bands]
    bins.append(("no other digit", digit & (contact == np.inf)))
    alike = same_arrangements()
    for name in names:
        model = zoo.create_model(name if "." in name else f"{name}.{LAYOUT}", pretrained=True)
        pred, probs = zoo.predict(model, images, return_probs=True)
        said_digit = pred != BACKGROUND
        shape_iou = (digit & said_digit).sum() / (digit | said_digit).sum()
        wrong = digit & said_digit & (pred != labels)
        wrong_digit = wrong.sum() / digit.sum()
        in_overlaps = wrong[overlap].sum() / (digit & overlap).sum()
        elsewhere = wrong[~overlap].sum() / (digit & ~overlap).sum()
        overlaps_alone = digit_miou(np.where(overlap, pred, labels), labels)
        right = []
        for i in range(len(labels)):
            for d in range(10):
                regions, n = ndimage.label(labels[i] == d)
                for k in range(1, n + 1):
                    region = regions == k
                    if region.sum() >= 20:
                        right.append((pred[i][region] == d).mean())
        right = np.array(right)
        print(
            f"{name}: digit-vs-background IoU {shape_iou:.5f}; digit pixels with the wrong digit "
            f"{wrong_digit:.1%} ({in_overlaps:.0%} in overlaps, {elsewhere:.1%} elsewhere); "
            f"{len(right)} instances: entirely right {(right > 0.99).mean():.0%}, "
            f"partly {((right > 0.5) & (right <= 0.99)).mean():.0%}, "
            f"mostly wrong {(right <= 0.5).mean():.0%}; "
            f"digit mIoU {digit_miou(pred, labels):.3f}, overlaps alone {overlaps_alone:.3f}"
        )
        print(
            f"  touching digits: {touching[digit].mean():.1%} of digit pixels, {wrong[touching].mean():.1%} "
            f"wrong; digits alone: {wrong[digit & ~touching].mean():.1%} wrong"
        )
        near = digit_miou(np.where(contact < 3, pred, labels), labels)
        print(
            "  distance to another digit (px): share of digit pixels / wrong there / share of the errors "
            f"(right from 3 px out, it would score {near:.3f})"
        )
        for label, there in bins:
            print(
                f"    {label:>15}: {there.sum() / digit.sum():6.1%} {wrong[there].mean():6.1%} "
                f"{wrong[there].sum() / wrong.sum():6.1%}"
            )
        voted = np.stack([glyph_vote(p, o) for p, o in zip(probs, owners)])
        scores = {split: digit_miou(zoo.predict(model, im), lab) for split, (im, lab) in alike.items()}
        print(
            f"  glyph vote (oracle grouping): {digit_miou(voted, labels):.3f}; same arrangements with "
            + ", ".join(f"{split} glyphs {score:.3f}" for split, score in scores.items())
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["vgg7_dilated"])
