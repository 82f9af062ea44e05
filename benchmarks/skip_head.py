"""A context head behind a skip, reading its blocks apart or concatenated: `python benchmarks/skip_head.py`.

`vgg7_dilated_skip_context`'s training step at 512x512 (batch 4, AdamW, bf16 autocast where the
CPU has bf16 instructions), run two ways with the same weights:

- "blocks": as the model runs it; the head gets the skipped and the deep features apart
  (`ZooModel.head_input`);
- "concatenated": the head reads the `SkipConcat` output, `model.head(model.forward_features(x))`,
  as every model did before `head_input`;

and `unet`'s step beside them. The three take turns in one process; medians of `--reps` steps.
Printed as a table and written to JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # zoo from this checkout; run.py beside this script

from machine import describe  # noqa: E402
from profile_step import make_step  # noqa: E402
from run import interleaved, write_json  # noqa: E402

import zoo  # noqa: E402
from zoo.cpu import has_bf16, keep_freed_memory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", default=str(HERE / "skip_head.json"))
    args = parser.parse_args()
    keep_freed_memory()
    bf16 = has_bf16()
    torch.manual_seed(0)
    model = zoo.create_model("vgg7_dilated_skip_context", num_classes=2)
    unet = zoo.create_model("unet", num_classes=2)

    def concatenated(x: torch.Tensor) -> torch.Tensor:
        return model.head(model.forward_features(x))

    size = args.size
    steps = {
        "blocks": make_step(model, 4, size, size, bf16),
        "concatenated": make_step(model, 4, size, size, bf16, forward=concatenated),
        "unet": make_step(unet, 4, size, size, bf16),
    }
    times = interleaved(list(steps.values()), "cpu", warmup=2, reps=args.reps, min_seconds=0.0)
    ms = {name: 1000 * statistics.median(t) for name, t in zip(steps, times)}
    rows = [{"step": name, "ms": round(v, 1), "vs_unet": round(v / ms["unet"], 2)} for name, v in ms.items()]
    print("| step | ms | x unet |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['ms']} | {r['vs_unet']} |")
    ratio = ms["blocks"] / ms["concatenated"]
    print(f"blocks / concatenated: {ratio:.3f}")
    write_json(
        args.json,
        {
            "command": "python benchmarks/skip_head.py " + " ".join(sys.argv[1:]),
            "machine": describe(),
            "size": args.size,
            "batch": 4,
            "bf16": bf16,
            "rows": rows,
            "blocks_over_concatenated": round(ratio, 3),
        },
    )


if __name__ == "__main__":
    main()
