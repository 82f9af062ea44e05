"""`python -m zoo.rf MODEL [--pretrained] [--plot erf.png]`: receptive-field table and measured field.

`python -m zoo.rf --compare erf.png` draws every registered model (random weights, and trained
weights where shipped) in one figure.
"""

from __future__ import annotations

import argparse
import json
import sys

from zoo.builder import create_model, list_models
from zoo.rf.effective import effective_receptive_field
from zoo.rf.theory import receptive_field
from zoo.viz import save_erf_figure


def compare(path: str, samples: int, inits: int, json_path: str | None) -> None:
    """One figure, one panel per (model, weights); statistics printed and optionally saved."""
    fields, rows = [], []
    pretrained = set(list_models(pretrained=True))
    for name in list_models():
        for weights in ("random", "trained") if name in pretrained else ("random",):
            m = create_model(name, pretrained=weights == "trained")
            erf = effective_receptive_field(m, samples=samples, inits=inits, weights=weights)
            fields.append((f"{name} ({weights})", erf))
            rows.append({"model": name, "weights": weights, "theoretical": erf.theoretical[0],
                         "radius95": erf.radius, "ratio": round(erf.ratio, 3)})  # fmt: skip
            print(
                f"{name:28s} {weights:8s} RF {erf.theoretical[0]:4d}  r95 {erf.radius:6.1f}  ratio "
                f"{erf.ratio:.2f}"
            )
    save_erf_figure(path, fields)
    print(f"wrote {path}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.rf", description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="a registered model name")
    parser.add_argument("--pretrained", action="store_true", help="measure the shipped trained weights too")
    parser.add_argument("--plot", help="write a heat map PNG of the effective field")
    parser.add_argument("--compare", metavar="PNG", help="figure of every registered model")
    parser.add_argument("--json", help="with --compare: write the statistics as JSON")
    parser.add_argument("--samples", type=int, default=16, help="random inputs per measurement")
    parser.add_argument("--inits", type=int, default=4, help="initialisations averaged for random weights")
    args = parser.parse_args(argv)
    try:
        if args.compare:
            compare(args.compare, args.samples, args.inits, args.json)
            return 0
        if not args.model:
            parser.error("give a model name (see zoo.list_models()) or --compare PNG")
        model = create_model(args.model, pretrained=args.pretrained)
        print(f"{args.model}\n{receptive_field(model)}\n")
        fields = [("random", effective_receptive_field(model, samples=args.samples, inits=args.inits))]
        if args.pretrained:
            fields.append(
                ("trained", effective_receptive_field(model, samples=args.samples, weights="trained"))
            )
        for _, erf in fields:
            print(erf)
        if args.plot:
            save_erf_figure(args.plot, [(f"{args.model} ({w})", erf) for w, erf in fields])
            print(f"wrote {args.plot}")
        return 0
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
