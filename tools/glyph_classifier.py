"""Can a backbone tell the digits apart from 400 training glyphs each? `python tools/glyph_classifier.py`.

Trains a zoo model as a glyph classifier (`head="classify"`, 10 classes) on the generator's
training glyph pool (28x28, padded to 40x40, random shifts, rotations and scaling each step)
and prints its accuracy on the validation and test glyph pools: the identity accuracy the
backbone can reach when it pools over the whole glyph. With `--out DIR` it also writes the
classifier as `{model}.glyphs.safetensors` + JSON card, a starting point for a segmentation fit
(`--model.init_from DIR/{model}.glyphs.safetensors --model.init_parts features`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo  # noqa: E402
from zoo.checkpoint import save_shipped  # noqa: E402
from zoo.data.glyphs import glyph_pools  # noqa: E402

PAD = 6


def jitter(x: torch.Tensor) -> torch.Tensor:
    """Random rotation (+-12 deg), scale (+-10%) and shift (+-15% of the padded size) per glyph."""
    n = x.shape[0]
    angle = (torch.rand(n) * 2 - 1) * 12 * math.pi / 180
    scale = 1 + (torch.rand(n) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2) * 2 - 1) * 0.3
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    return F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg7_dilated")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the trained classifier here (safetensors + card)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    pools = glyph_pools(seed=args.seed)  # the generator's glyph-disjoint pools
    x = {
        s: F.pad(torch.tensor(g, dtype=torch.float32)[:, None] / 255, (PAD,) * 4)
        for s, (g, _) in pools.items()
    }
    y = {s: torch.tensor(d, dtype=torch.long) for s, (_, d) in pools.items()}
    model_kwargs = {"num_classes": 10, "head": "classify"}
    model = zoo.create_model(args.model, **model_kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(y["train"]) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
    start = time.perf_counter()
    for _epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y["train"])).split(args.batch_size):
            loss = F.cross_entropy(model(jitter(x["train"][idx])), y["train"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = {s: (model(x[s]).argmax(1) == y[s]).float().mean().item() for s in ("val", "test")}
    seconds = time.perf_counter() - start
    print(
        f"{args.model} as a glyph classifier, {args.epochs} epochs ({seconds:.0f} s): "
        f"validation glyphs {acc['val']:.1%}, test glyphs {acc['test']:.1%}"
    )
    if args.out:
        card = {
            "metrics": {
                "split": "glyph pools (accuracy)",
                "val_glyph_acc": acc["val"],
                "test_glyph_acc": acc["test"],
            },
            "data": {"source": "the generator's glyph pools, padded to 40x40, jittered", "seed": args.seed},
            "training": {
                "command": "python tools/glyph_classifier.py "
                + " ".join(sys.argv[1:] if argv is None else argv),
                "epochs": args.epochs,
                "fit_seconds": round(seconds, 1),
            },
        }
        for path in save_shipped(model, args.out, args.model, model_kwargs, card, tag="glyphs"):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
