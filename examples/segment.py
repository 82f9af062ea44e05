"""Segment an image file with a zoo model and write a coloured label PNG.

    python examples/segment.py digits.png mask.png --model vgg4_dilated
    python examples/segment.py photo.jpg labels.png --checkpoint checkpoints/runs/mine/best.ckpt

Any image size works (the models are fully convolutional); `--tile 512` bounds the memory by the
tile for large scans, with the same labels as the whole image at once (see `zoo.predict`).
The image is read as the model takes it: grayscale for a one-channel model (the shipped M2NIST
weights: digits bright on a dark background), RGB for a three-channel one (e.g. trained with
`--data FolderSegmentation` on photographs); `zoo.predict` applies the normalisation the model
was trained with.
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
    parser.add_argument("image", help="input image (any format Pillow reads)")
    parser.add_argument("out", help="output PNG: the labels in colour (M2NIST: digits 0-9, background black)")
    parser.add_argument(
        "--model", default="vgg4_dilated", help="a model with weights (zoo.list_models(pretrained=True))"
    )
    parser.add_argument(
        "--checkpoint", help="a checkpoint file instead of shipped weights (.ckpt, .safetensors)"
    )
    parser.add_argument(
        "--tile", type=int, help="segment in tiles of about this size (exact; bounded memory)"
    )
    args = parser.parse_args(argv)
    try:
        model = (
            zoo.load(args.checkpoint) if args.checkpoint else zoo.create_model(args.model, pretrained=True)
        )
        try:
            image = Image.open(args.image).convert("L" if model.in_channels == 1 else "RGB")
        except OSError as e:
            raise ValueError(f"cannot read {args.image} as an image: {e}") from None
        labels = predict(model, image, tile=args.tile)
        Image.fromarray(colorize(labels)).save(args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = getattr(model, "class_names", None)
    if names is None:  # the M2NIST weights: name the digits
        found = f"digits found: {sorted(int(d) for d in np.unique(labels) if d < 10) or 'none'}"
    else:
        found = f"classes found: {', '.join(str(names[c]) for c in np.unique(labels))}"
    print(f"{args.out}: {image.height}x{image.width}, {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
