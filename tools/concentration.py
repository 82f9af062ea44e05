"""How much of an attribution falls on the digit it explains: `python tools/concentration.py`.

For every digit of the generated test split (500 images, about 1,000 digits), the explained
score is that digit's class logit summed over the digit's own pixels; the measure is the share
of absolute attribution (`zoo.attribution.concentration`) inside the digit's 28x28 glyph box,
averaged over the digits. 1 means the explanation rests on the digit alone; a map spread
evenly over the 64x84 canvas would give 784 / 5376 = 0.146. The rows pair full-resolution
models with their downsampling twins of equal size, all with their shipped weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from zoo.attribution import METHODS, concentration, explain
from zoo.builder import create_model
from zoo.data.glyphs import GLYPH
from zoo.data.layouts import DEFAULT_LAYOUT, LAYOUTS
from zoo.data.splits import test_split_glyphs

DEFAULT_MODELS = (
    "vgg4_dilated",
    "vgg4_stitch",
    "vgg4_strided",
    "vgg4_maxpool",
    "unet_small",
    "vgg7_dilated_context",
    "unet",
    "resnet18_dilated",
    "resnet18_strided",
)


def glyph_shares(
    model: torch.nn.Module,
    method: str,
    layout: str = DEFAULT_LAYOUT,
    limit: int | None = None,
    steps: int = 16,
    batch_size: int = 50,
) -> np.ndarray:
    """One share per digit of the test split (the first `limit` images): attribution inside its glyph box.

    Args:
        steps: integrated gradients' path points.
    """
    images, labels, owners, place = test_split_glyphs(layout)
    n = len(images) if limit is None else min(limit, len(images))
    shares = []
    for slot in range(place.used.shape[1]):
        # a glyph hidden under brighter ones owns no pixel and has nothing to explain
        present = [i for i in range(n) if (owners[i] == slot).any()]
        digit = {i: int(labels[i][owners[i] == slot][0]) for i in present}
        for d in sorted(set(digit.values())):
            idx = [i for i in present if digit[i] == d]
            for start in range(0, len(idx), batch_size):
                chunk = np.array(idx[start : start + batch_size])
                mask = torch.from_numpy(owners[chunk] == slot)
                attr = explain(model, images[chunk], d, mask=mask, method=method, steps=steps)
                top, left = place.tops[chunk, slot], place.lefts[chunk, slot]
                boxes = torch.from_numpy(np.stack([top, left, top + GLYPH, left + GLYPH], axis=1))
                shares.append(concentration(attr, boxes).numpy())
    return np.concatenate(shares)


def table(rows: dict[str, dict[str, float]], methods: list[str]) -> str:
    """Markdown: one row per model, one column per method."""
    head = "| model | " + " | ".join(m.replace("_", " ") for m in methods) + " |"
    lines = [head, "|---|" + "---:|" * len(methods)]
    for name, shares in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{shares[m]:.3f}" for m in methods) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "models", nargs="*", default=list(DEFAULT_MODELS), help="shipped models (name or name.tag)"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--layout", default=DEFAULT_LAYOUT, choices=LAYOUTS)
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--steps", type=int, default=16, help="integrated gradients' path points")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    rows: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    digits = 0
    for name in args.models:
        model = create_model(name, pretrained=True)
        rows[name] = {}
        for method in args.methods:
            shares = glyph_shares(model, method, args.layout, args.limit, args.steps)
            rows[name][method] = float(np.nanmean(shares))
            digits = len(shares)
    print(table(rows, args.methods))
    if args.json:
        record = {
            "command": "python tools/concentration.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "layout": args.layout,
            "digits": digits,
            "steps": args.steps,
            "seconds": round(time.perf_counter() - start, 1),
            "share_inside_glyph_box": rows,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
