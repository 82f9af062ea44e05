"""`python -m zoo export CKPT OUT_DIR` and `python -m zoo models [PATTERN] [--pretrained]`."""

from __future__ import annotations

import argparse
import sys

import zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description="fullres-zoo utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="a train.py checkpoint -> safetensors + JSON model card")
    ex.add_argument("checkpoint")
    ex.add_argument("out_dir")
    ex.add_argument("--tag", default=zoo.hub.DEFAULT_TAG)
    ex.add_argument("--results", help="the run's results.json (default: beside the checkpoint)")
    ls = sub.add_parser("models", help="list registered models")
    ls.add_argument("pattern", nargs="?")
    ls.add_argument("--pretrained", action="store_true", help="only those with shipped weights")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            weights, card = zoo.export(args.checkpoint, args.out_dir, tag=args.tag, results=args.results)
            print(f"wrote {weights} and {card}")
        else:
            print("\n".join(zoo.list_models(args.pattern, pretrained=args.pretrained)))
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
