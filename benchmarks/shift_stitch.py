"""ShiftStitch against its dense equivalent: `python benchmarks/shift_stitch.py`.

The dense form of `vgg4_stitch`: stride-1 2x2 max pooling (padded with -inf at the bottom and
right) and every later convolution and pooling dilated by the product of the poolings before it.
Same weights; outputs are checked equal first, then forward + backward is timed for both
(median of `--reps`, after warm-up). Writes benchmarks/shift_stitch.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import timed, write_json  # noqa: E402  (benchmarks/run.py, beside this script)

import zoo  # noqa: E402
from zoo.cpu import keep_freed_memory  # noqa: E402
from zoo.layers import ConvBNAct  # noqa: E402


class DensePool(nn.Module):
    """Stride-1 k x k max pooling with dilation d, padded with -inf at the bottom and right."""

    def __init__(self, k: int, dilation: int) -> None:
        super().__init__()
        self.k, self.d = k, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.k - 1) * self.d
        return F.max_pool2d(F.pad(x, (0, pad, 0, pad), value=float("-inf")), self.k, 1, dilation=self.d)


def dense_twin(stitch: nn.Module) -> nn.Module:
    """A full-resolution model with the same weights: pools and convs dilated instead of stitched."""
    convs = [m for m in stitch.modules() if isinstance(m, ConvBNAct)]
    layers, d = [], 1
    for i, block in enumerate(convs):
        if i > 0:
            layers.append(DensePool(2, d))
            d *= 2
        twin = ConvBNAct(block.conv.in_channels, block.conv.out_channels, 3, dilation=d)
        twin.load_state_dict(block.state_dict())
        layers.append(twin)
    dense = zoo.create_model("vgg4_dilated")  # reuse the head and the forward; swap the features
    dense.features = nn.Sequential(*layers)
    dense.head.load_state_dict(stitch.head.state_dict())
    return dense.to(memory_format=torch.channels_last)  # the layout create_model gives every model


def fwd_bwd(model: nn.Module, x: torch.Tensor):
    """One forward + backward of `model` on `x`, as a callable for `timed`."""

    def step():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/shift_stitch.json")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as train.py does: docs/benchmarks.md says why
    torch.manual_seed(0)
    stitch = zoo.create_model("vgg4_stitch").train()
    rows = []
    for batch, h, w in [(32, 64, 96), (1, 256, 256), (1, 512, 512)]:
        x = torch.rand(batch, 1, h, w)
        # a fresh twin per size: the timed training calls update each model's batch-norm
        # statistics a different number of times
        dense = dense_twin(stitch)
        with torch.no_grad():
            same = torch.allclose(stitch.eval()(x), dense.eval()(x), atol=1e-4)
        stitch.train(), dense.train()
        # interleave the two so that background load hits both alike
        ts, td = [], []
        for _ in range(args.reps):
            ts += timed(fwd_bwd(stitch, x), "cpu", args.warmup if not ts else 0, 1)
            td += timed(fwd_bwd(dense, x), "cpu", args.warmup if not td else 0, 1)
        row = {
            "size": f"{h}x{w} x{batch}",
            "outputs_equal": same,
            "stitch_ms": 1e3 * statistics.median(ts),
            "dense_ms": 1e3 * statistics.median(td),
        }
        row["ratio"] = row["stitch_ms"] / row["dense_ms"]
        rows.append(row)
        print(f"{row['size']:>14}: stitch {row['stitch_ms']:8.1f} ms, dense {row['dense_ms']:8.1f} ms, "
              f"ratio {row['ratio']:.2f}, outputs equal: {same}", flush=True)  # fmt: skip
    write_json(args.json, {"threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
