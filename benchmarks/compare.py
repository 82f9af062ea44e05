"""Accuracy against training cost, one point per model: `python benchmarks/compare.py`.

Digit mean IoU of the shared recipe, from the shipped model cards (m2nist layout); training cost
per image (ms, 64x84, batch 32, bf16 rows where the JSON has them, the precision the cards trained
in, else fp32) from a benchmarks/run.py JSON. Writes docs/compare.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from summary import first_stage_score  # noqa: E402  (tools/summary.py)

import zoo  # noqa: E402
from zoo.shipped import pretrained_card  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", default="benchmarks/results.json")
    parser.add_argument("--out", default="docs/compare.png")
    args = parser.parse_args(argv)
    bench = json.loads(Path(args.bench).read_text())
    rows = [
        r for r in bench["rows"] if r["size"] == "64x84" and r["device"] == "cpu" and not r.get("compile")
    ]
    precision = "bf16" if any(r.get("bf16") for r in rows) else "fp32"
    cost = {
        r["model"]: 1e3 / r["training"]["images_per_s"]
        for r in rows
        if bool(r.get("bf16")) == (precision == "bf16")
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = {
        "full resolution": ("o", "tab:blue"),
        "downsampling": ("s", "tab:red"),
        "U-Net": ("^", "tab:green"),
    }
    seen, placed = set(), []
    for name in zoo.list_models(pretrained=True):
        if name not in cost:
            continue
        model = zoo.create_model(name)
        group = (
            "U-Net"
            if name.startswith("unet")
            else ("full resolution" if model.full_resolution else "downsampling")
        )
        marker, color = styles[group]
        miou = first_stage_score(
            pretrained_card(name)
        )  # the shared recipe's, also for longer-trained weights
        ax.scatter(cost[name], miou, marker=marker, color=color, s=60, label=None if group in seen else group)
        seen.add(group)
        params = zoo.count_parameters(model)
        # a label next to an already labelled point goes below its own point instead of over the other
        crowded = any(abs(math.log10(cost[name] / c)) < 0.3 and abs(miou - m) < 0.02 for c, m in placed)
        placed.append((cost[name], miou))
        ax.annotate(f"{name}\n{params / 1e3:.0f}k", (cost[name], miou), fontsize=7,
                    xytext=(5, -20 if crowded else 3), textcoords="offset points")  # fmt: skip
    ax.set(xscale="log", xlabel=f"training cost, ms per 64x84 image (CPU, {precision}, benchmarks/run.py)",
           ylabel="test digit mean IoU (model card)",
           title="M2NIST (m2nist layout): accuracy against training cost")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
