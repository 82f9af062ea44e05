"""Shows oneDNN's slow kernel build for bf16 depthwise convolutions, without the zoo.

`python tools/bf16_depthwise_stall.py [--timeout 5]` builds, in a child process each, a CPU bf16
depthwise 1 x k convolution (forward and backward, channels_last, 2x32x32) for several channel
counts and kernel widths, and prints a table: the seconds each took, or "stalled" where it ran
past the timeout. On PyTorch 2.13 (oneDNN 3.12) with AVX512-BF16, 2-16 channels stall from a
width of 15; `zoo.cpu.bf16_depthwise_build_stalls` names those shapes, and `BoxMean` sums them
in fp32.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = """
import sys, torch, torch.nn.functional as F
c, k = int(sys.argv[1]), int(sys.argv[2])
x = torch.rand(2, c, 32, 32, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
w = torch.ones(c, 1, 1, k, dtype=torch.bfloat16)
F.conv2d(x.requires_grad_(), w, padding=(0, k // 2), groups=c).sum().backward()
"""


def build_seconds(channels: int, width: int, timeout: float) -> float | None:
    """Seconds a fresh process takes to run the convolution once; None past `timeout`."""
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", CHILD, str(channels), str(width)], check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 2, 8, 16, 17, 24, 32])
    parser.add_argument("--widths", type=int, nargs="+", default=[9, 13, 15, 29])
    args = parser.parse_args()
    print("channels | " + " | ".join(f"1x{k}" for k in args.widths))
    for c in args.channels:
        cells = []
        for k in args.widths:
            s = build_seconds(c, k, args.timeout)
            cells.append("stalled" if s is None else f"{s:.1f} s")
        print(f"{c} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
