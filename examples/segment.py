"""Segment a grayscale PNG with a pretrained zoo model and write a coloured label PNG.

    python examples/segment.py digits.png mask.png --model vgg4_dilated

Any image size works (the models are fully convolutional); `--tile 512` bounds the memory by the
tile for large scans, with the same labels as the whole image at once (see `zoo.predict`).
Colour PNGs are converted to grayscale; digits should be bright on a dark background, as in M2NIST.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

import zoo
from zoo.inference import predict
from zoo.viz import colorize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", help="input PNG")
    parser.add_argument("out", help="output PNG: the labels in colour, digits 0-9, background black")
    parser.add_argument(
        "--model", default="vgg4_dilated", help="a model with weights (zoo.list_models(pretrained=True))"
    )
    parser.add_argument(
        "--checkpoint", help="a checkpoint file instead of shipped weights (.ckpt, .safetensors)"
    )
    parser.add_argument("--tile", type=int, help="segment in tiles of about this size (exact; bounded memory)")
    args = parser.parse_args(argv)
    try:
        model = (
            zoo.load(args.checkpoint) if args.checkpoint else zoo.create_model(args.model, pretrained=True)
        )
        try:
            image = np.asarray(Image.open(args.image).convert("L"))
        except OSError as e:
            raise ValueError(f"cannot read {args.image} as an image: {e}") from None
        labels = predict(model, image, tile=args.tile)
        Image.fromarray(colorize(labels)).save(args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    digits = sorted(int(d) for d in np.unique(labels) if d < 10)
    print(f"{args.out}: {image.shape[0]}x{image.shape[1]}, digits found: {digits or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
