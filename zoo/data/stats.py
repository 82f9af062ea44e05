"""Layout statistics of an M2NIST label set: what tells the published layout from another.

Each is computed from the label maps alone (uint8 (N, H, W), 10 = background):

- `background`: the share of all pixels that are background.
- `touching`: the share of digit pixels whose blob (8-connected digit pixels of one image) holds
  two or more digit classes: digits that touch or overlap.
- `left_ink`: the share of images whose leftmost digit pixel lies in columns 0-13 (an image
  without digits counts as not).
- `classes_mean`: distinct digit classes per image, averaged over the images.
- `single_class`: the share of images holding exactly one digit class.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from zoo.data.m2nist import BACKGROUND, NUM_CLASSES

LEFT_COLUMNS = 14  # "left ink": the leftmost digit pixel in columns 0..13

# the published M2NIST's 5,000 images (../shared/reference/FACTS.md)
PUBLISHED = {
    "background": 0.9425,
    "touching": 0.0014,
    "left_ink": 0.727,
    "classes_mean": 1.94,
    "single_class": 0.097,
}

DESCRIPTIONS = {
    "background": "background share of pixels",
    "touching": "digit pixels in blobs of 2+ classes",
    "left_ink": "images with ink in columns 0-13",
    "classes_mean": "distinct digit classes per image",
    "single_class": "images with a single digit class",
}


def touching_mask(labels: np.ndarray) -> np.ndarray:
    """Per pixel of label maps (N, H, W): a digit pixel whose 8-connected blob holds 2+ classes."""
    digit = labels != BACKGROUND
    # 8-connectivity within each image, none across the batch axis: one labelling for the stack
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    blobs, count = ndimage.label(digit, structure=structure)
    index = np.arange(1, count + 1)
    low = ndimage.minimum(labels, blobs, index)
    high = ndimage.maximum(labels, blobs, index)
    mixed = np.concatenate([[False], np.asarray(low) != np.asarray(high)])
    return mixed[blobs]


def touching_share(labels: np.ndarray) -> float:
    """Share of digit pixels whose 8-connected blob of digit pixels holds two or more classes."""
    digit = labels != BACKGROUND
    return float(touching_mask(labels)[digit].mean()) if digit.any() else 0.0


def classes_per_image(labels: np.ndarray) -> np.ndarray:
    """Distinct digit classes in each image, int (N,)."""
    present = np.zeros((len(labels), NUM_CLASSES), bool)
    for i, lab in enumerate(labels):
        present[i, np.unique(lab)] = True
    return present[:, :BACKGROUND].sum(1)


def layout_stats(labels: np.ndarray) -> dict[str, float]:
    """The five statistics of the module docstring for label maps uint8 (N, H, W)."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.size == 0:
        raise ValueError(f"expected label maps (N, H, W) with N >= 1, found shape {labels.shape}")
    if labels.max() > BACKGROUND:
        raise ValueError(f"labels must lie in 0..{BACKGROUND}, found {int(labels.max())}")
    digit = labels != BACKGROUND
    columns = digit.any(axis=1)  # (N, W): columns holding ink
    left = columns[:, :LEFT_COLUMNS].any(axis=1)
    classes = classes_per_image(labels)
    return {
        "background": float((~digit).mean()),
        "touching": touching_share(labels),
        "left_ink": float(left.mean()),
        "classes_mean": float(classes.mean()),
        "single_class": float((classes == 1).mean()),
    }


def stats_table(columns: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per statistic, one column per named set of statistics."""
    names = list(columns)
    lines = ["| statistic | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, text in DESCRIPTIONS.items():
        lines.append(f"| {text} | " + " | ".join(f"{columns[n][key]:.4f}" for n in names) + " |")
    return "\n".join(lines)
