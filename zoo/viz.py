"""Pictures: coloured label maps, image | mask grids, and the training report PNG."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from zoo.cards import IGNORE_INDEX
from zoo.data.m2nist import BACKGROUND

# tab10-like colours per digit, black background
PALETTE = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
        [0, 0, 0],
    ],
    dtype=np.uint8,
)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Label map (..., H, W) -> RGB uint8 (..., H, W, 3): M2NIST's digits 0..9 in tab10 colours,
    10 (background) black; ignored pixels (IGNORE_INDEX) white; classes past 10 reuse the colours."""
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0 and labels.min() != IGNORE_INDEX:
        raise ValueError(f"labels must be class indices >= 0 or {IGNORE_INDEX}, found {labels.min()}")
    rgb = PALETTE[np.where(labels >= len(PALETTE), labels % (len(PALETTE) - 1), labels.clip(min=0))]
    rgb[labels == IGNORE_INDEX] = 255
    return rgb


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _digits_title(labels: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in np.unique(labels) if v != BACKGROUND)


def _draw_sample(axes: list, image: np.ndarray, maps: list[np.ndarray], names: list[str]) -> None:
    """Image in grey on axes[0], each label map coloured on the next axes, titled by its digits."""
    for ax in axes:
        ax.axis("off")
    axes[0].imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    for ax, labels, name in zip(axes[1:], maps, names):
        ax.imshow(colorize(labels))
        ax.set_title(f"{name} {_digits_title(labels)}".strip(), fontsize=7)


def save_grid(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray | None = None,
    columns: int = 4,
) -> Path:
    """A PNG of image | coloured mask pairs, or image | truth | prediction triples."""
    plt = _pyplot()
    panels = [labels] if predictions is None else [labels, predictions]
    names = [""] if predictions is None else ["truth", "prediction"]
    width = 1 + len(panels)
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(
        rows, width * columns, figsize=(2.2 * width * columns, 1.8 * rows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(len(images)):
        r, c = divmod(i, columns)
        _draw_sample(list(axes[r, width * c : width * (c + 1)]), images[i], [m[i] for m in panels], names)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def read_metrics_csv(*paths: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger `metrics.csv` files -> {metric: [(epoch, value), ...]}, epoch-level only.

    Several files (the versions of a resumed run, oldest first) merge by epoch; where two hold
    the same epoch, the later file wins (a resumed run repeats the interrupted epoch).
    """
    merged: dict[str, dict[int, float]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                for key, value in row.items():
                    if key in ("epoch", "step") or not value or key.endswith("_step"):
                        continue
                    merged.setdefault(key, {})[int(row["epoch"])] = float(value)
    return {key: sorted(values.items()) for key, values in merged.items()}


def save_training_report(
    path: str | Path,
    curves: dict[str, list[tuple[int, float]]],
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    title: str = "",
) -> Path:
    """One PNG: loss and validation-metric curves on top, test images | truth | prediction below.

    Args:
        curves: per-epoch metrics as `read_metrics_csv` returns them.
    """
    plt = _pyplot()
    n = len(images)
    columns = 4
    rows = max(1, math.ceil(n / columns))
    fig = plt.figure(figsize=(14, 3.2 + 1.6 * rows))
    grid = fig.add_gridspec(1 + rows, 3 * columns, height_ratios=[2.2] + [1] * rows)
    loss_ax = fig.add_subplot(grid[0, : 3 * columns // 2])
    score_ax = fig.add_subplot(grid[0, 3 * columns // 2 :])
    for key, ax in (("train/loss_epoch", loss_ax), ("val/loss", loss_ax)):
        if key in curves:
            e, v = zip(*curves[key])
            ax.plot(e, v, marker=".", label=key.replace("_epoch", ""))
    loss_ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for key in ("val/digit_miou", "val/miou", "val/pixel_acc"):
        if key in curves:
            e, v = zip(*curves[key])
            score_ax.plot(e, v, marker=".", label=key)
    score_ax.set(xlabel="epoch", ylim=(0, 1), title="validation")
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
        if ax.lines:  # a test-only run logs no curves
            ax.legend(fontsize=8)
    for i in range(n):
        r, c = divmod(i, columns)
        axes = [fig.add_subplot(grid[1 + r, 3 * c + k]) for k in range(3)]
        _draw_sample(axes, images[i], [labels[i], predictions[i]], ["truth", "prediction"])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def save_erf_figure(path: str | Path, fields: list[tuple[str, object]], columns: int = 4) -> Path:
    """Heat maps of effective receptive fields, each with its theoretical field (square) and the
    radius holding 95% of the gradient (circle). `fields`: (title, EffectiveReceptiveField) pairs."""
    plt = _pyplot()
    from matplotlib.patches import Circle, Rectangle

    columns = min(columns, len(fields))
    rows = math.ceil(len(fields) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, erf) in zip(axes.ravel(), fields):
        (cy, cx), (th, tw) = erf.center, erf.theoretical
        half = max(th, tw) // 2 + 4
        top, left = max(cy - half, 0), max(cx - half, 0)
        crop = erf.map[top : cy + half + 1, left : cx + half + 1]
        ax.imshow(crop / crop.max(), cmap="magma", vmin=0, vmax=1)
        ax.add_patch(
            Rectangle((cx - left - tw / 2, cy - top - th / 2), tw, th, fill=False, ec="cyan", lw=1, ls="--")
        )
        ax.add_patch(Circle((cx - left, cy - top), erf.radius, fill=False, ec="lime", lw=1))
        ax.set_title(f"{title}\nRF {th}, r95 {erf.radius:.1f}, ratio {erf.ratio:.2f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def save_explanation_figure(
    path: str | Path,
    image: np.ndarray,
    prediction: np.ndarray,
    maps: dict[str, np.ndarray],
    title: str = "",
    region: np.ndarray | None = None,
) -> Path:
    """Image | prediction | one signed attribution map per method (red positive, blue negative).

    Args:
        maps: {method name: (H, W) attribution}.
        region: boolean (H, W): the explained pixels, outlined on the prediction.
    """
    plt = _pyplot()
    n = 2 + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.4), squeeze=False)
    axes = list(axes[0])
    _draw_sample(axes[:2], image, [prediction], ["prediction"])
    if region is not None:
        axes[1].contour(region.astype(float), levels=[0.5], colors="white", linewidths=0.8)
    for ax, (name, a) in zip(axes[2:], maps.items()):
        limit = float(np.abs(a).max()) or 1.0
        ax.imshow(a, cmap="bwr", vmin=-limit, vmax=limit)
        ax.set_title(name.replace("_", " "), fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
