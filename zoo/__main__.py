"""`python -m zoo train | models | export | explain`: train, list, export weights, explain a prediction.

`python -m zoo train ...` is `python train.py ...` (the `train` extra), from a wheel as from the checkout.

`python -m zoo export CKPT OUT_DIR`, `python -m zoo models [PATTERN] [--pretrained]` and
`python -m zoo explain MODEL [--pretrained] --index N [--class C | --pixel Y X] --method ... --plot OUT`."""

from __future__ import annotations

import argparse
import sys

import numpy as np

import zoo
from zoo.attribution import METHODS
from zoo.data.layouts import DEFAULT_LAYOUT, LAYOUTS
from zoo.data.splits import test_split
from zoo.viz import save_explanation_figure


def _explain(args: argparse.Namespace) -> str:
    """Explain one test image's prediction; returns the report printed."""
    if args.checkpoint:
        model = zoo.load(args.checkpoint)
    else:
        model = zoo.create_model(args.model, pretrained=args.pretrained)
    images, _ = test_split(args.layout)
    if not 0 <= args.index < len(images):
        raise ValueError(f"--index must be in 0..{len(images) - 1}, found {args.index}")
    image = images[args.index]
    prediction = zoo.predict(model, image)
    methods = list(METHODS) if args.method == ["all"] else args.method
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--method must be among {METHODS} or 'all', found {unknown}")
    if args.pixel is not None:
        y, x = args.pixel
        if not (0 <= y < image.shape[0] and 0 <= x < image.shape[1]):
            raise ValueError(
                f"--pixel Y X must lie in the {image.shape[0]}x{image.shape[1]} image, found {y} {x}"
            )
        target = int(prediction[tuple(args.pixel)]) if args.target is None else args.target
        region = np.zeros(image.shape, bool)
        region[tuple(args.pixel)] = True
        what = f"pixel {tuple(args.pixel)}"
    else:
        digits = prediction[prediction != zoo.data.BACKGROUND]
        if args.target is None and not len(digits):
            raise ValueError(f"the model predicts no digit in test image {args.index}: pass --class")
        target = int(np.bincount(digits).argmax()) if args.target is None else args.target
        region = prediction == target
        what = f"the {int(region.sum())} pixels predicted as {target}"
    kwargs = {"pixel": tuple(args.pixel)} if args.pixel is not None else {"mask": region}
    maps = {
        m: zoo.explain(model, image, target, method=m, steps=args.steps, **kwargs).numpy() for m in methods
    }
    name = args.checkpoint or args.model
    lines = [f"{name}, {args.layout} test image {args.index}: class {target}'s logit summed over {what}"]
    for m, a in maps.items():
        lines.append(f"  {m}: total |attribution| {np.abs(a).sum():.4g}, sum {a.sum():.4g}")
    if args.plot:
        title = f"{name}: why class {target} ({what})"
        save_explanation_figure(args.plot, image, prediction, maps, title=title, region=region)
        lines.append(f"wrote {args.plot}")
    return "\n".join(lines)


def _export_hub(args: argparse.Namespace) -> str:
    """Shipped weights or a train.py checkpoint (with its card) -> the Hub layout in `out_dir`."""
    import tempfile
    from pathlib import Path

    if not Path(args.checkpoint).exists() and zoo.shipped.has_pretrained(args.checkpoint):
        model = zoo.create_model(args.checkpoint, pretrained=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:  # the shipped form first: it builds the card
            weights, _ = zoo.export(args.checkpoint, tmp, tag=args.tag, results=args.results)
            model = zoo.load(weights)
    return str(zoo.save_pretrained(model, args.out_dir))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # LightningCLI parses the rest: every train.py flag, --help included
        from zoo.training.cli import main as train

        return train(argv[1:], program="python -m zoo train")
    parser = argparse.ArgumentParser(prog="python -m zoo", description="fullres-zoo utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="python train.py's command line: `python -m zoo train fit --help`")
    ex = sub.add_parser("export", help="a train.py checkpoint -> safetensors + JSON model card")
    ex.add_argument(
        "checkpoint", help="a train.py .ckpt; with --format hub also shipped weights (name or name.tag)"
    )
    ex.add_argument("out_dir")
    ex.add_argument("--tag", default=zoo.shipped.DEFAULT_TAG)
    ex.add_argument("--results", help="the run's results.json (default: beside the checkpoint)")
    ex.add_argument(
        "--shared-recipe",
        help="results.json of the model's shared-recipe run (configs/shared.yaml), kept on the card "
        "for the model table",
    )
    ex.add_argument(
        "--format",
        choices=("shipped", "hub"),
        default="shipped",
        help="shipped: <arch>.<tag>.safetensors + .json as in checkpoints/; "
        "hub: config.json + model.safetensors + README.md (zoo.from_pretrained, push_to_hub)",
    )
    ls = sub.add_parser("models", help="list registered models")
    ls.add_argument("pattern", nargs="?")
    ls.add_argument("--pretrained", action="store_true", help="only those with shipped weights")
    why = sub.add_parser("explain", help="attribution maps of a test image's prediction (zoo.explain)")
    why.add_argument("model", nargs="?", help="a registered model (with --pretrained, optionally name.tag)")
    why.add_argument("--pretrained", action="store_true", help="the shipped weights")
    why.add_argument(
        "--checkpoint", help="a train.py .ckpt or a .safetensors with its card, instead of MODEL"
    )
    why.add_argument("--index", type=int, default=0, help="the generated test split's image")
    why.add_argument("--layout", default=DEFAULT_LAYOUT, choices=LAYOUTS)
    which = why.add_mutually_exclusive_group()
    which.add_argument(
        "--class", dest="target", type=int, help="explain this class (default: the most predicted digit)"
    )
    which.add_argument(
        "--pixel", type=int, nargs=2, metavar=("Y", "X"), help="explain this pixel's predicted class"
    )
    why.add_argument(
        "--method", "--methods", nargs="+", default=["guided"], help=f"{', '.join(METHODS)} or all"
    )
    why.add_argument("--steps", type=int, default=32, help="integrated gradients' path points")
    why.add_argument("--plot", help="write the figure here (PNG)")
    args = parser.parse_args(argv)
    try:
        if args.command == "export" and args.format == "hub":
            print(f"wrote {_export_hub(args)}")
        elif args.command == "export":
            weights, card = zoo.export(
                args.checkpoint,
                args.out_dir,
                tag=args.tag,
                results=args.results,
                shared_recipe=args.shared_recipe,
            )
            print(f"wrote {weights} and {card}")
        elif args.command == "models":
            print("\n".join(zoo.list_models(args.pattern, pretrained=args.pretrained)))
        else:
            if (args.model is None) == (args.checkpoint is None):
                raise ValueError("name a MODEL or give --checkpoint, not both")
            print(_explain(args))
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
