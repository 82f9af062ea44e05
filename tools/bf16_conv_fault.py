"""A oneDNN fault in PyTorch on the CPU: wrong bf16 weight gradients of dilated channels_last convolutions.

Plain PyTorch, no zoo import, so it can go upstream as it is: `python tools/bf16_conv_fault.py`.
For each shape it prints the relative error of the bf16 weight gradient against fp32 computed on
the same bf16-rounded operands (bf16's own rounding gives about 0.002), channels_last and NCHW.
Each case runs in a child process, because at some shapes the fault reads out of bounds and
the process dies (reported as "crashed"). When every channels_last row reads like its NCHW row,
the fault is fixed and `zoo.cpu`'s workaround can be retired (its probe then says so by itself).
"""

from __future__ import annotations

import platform
import subprocess
import sys

import torch

CASE = """
import sys
import torch
import torch.nn.functional as F

batch, channels, size, dilation, groups, layout = sys.argv[1:]
batch, channels, size, dilation, groups = map(int, (batch, channels, size, dilation, groups))
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
torch.manual_seed(0)
out_channels = 16 if groups == 1 else channels
x = torch.randn(batch, channels, size, size).bfloat16().contiguous(memory_format=fmt)
w = torch.randn(out_channels, channels // groups, 3, 3).bfloat16()
# clone, not contiguous(): a depthwise weight (C, 1, 3, 3) counts as contiguous in both layouts
w = w.clone(memory_format=fmt).requires_grad_()
y = F.conv2d(x, w, None, 1, dilation, dilation, groups)
upstream = torch.randn_like(y)
y.backward(upstream)
w32 = w.detach().float().requires_grad_()
F.conv2d(x.float(), w32, None, 1, dilation, dilation, groups).backward(upstream.float())
print(float((w.grad.float() - w32.grad).norm() / w32.grad.norm()))
"""

# (batch, input channels, height = width, dilation, groups)
SHAPES = [
    (1, 24, 32, 2, 1),
    (8, 24, 32, 2, 1),
    (8, 20, 32, 2, 1),
    (8, 24, 32, 1, 1),  # not dilated: right
    (8, 32, 32, 2, 1),  # a multiple of 16 channels: right
    (8, 24, 64, 4, 1),
    (8, 24, 32, 2, 24),  # depthwise
]


def run_case(shape: tuple[int, ...], layout: str) -> str:
    args = [str(v) for v in shape] + [layout]
    done = subprocess.run([sys.executable, "-c", CASE, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return f"crashed ({done.returncode})"
    error = float(done.stdout)
    return f"{error:.4f}" + ("" if error < 0.05 else "  WRONG")


def main() -> None:
    print(f"torch {torch.__version__}, {platform.machine()}, {platform.processor() or 'cpu'}")
    print(f"oneDNN (mkldnn) available: {torch.backends.mkldnn.is_available()}")
    print(f"AVX512-BF16: {torch.cpu._is_avx512_bf16_supported()}, AMX: {torch.cpu._is_amx_tile_supported()}")
    print("\n| batch | in channels | size | dilation | groups | channels_last error | NCHW error |")
    print("|---:|---:|---:|---:|---:|---|---|")
    for shape in SHAPES:
        cells = " | ".join(str(v) for v in shape)
        print(f"| {cells} | {run_case(shape, 'channels_last')} | {run_case(shape, 'nchw')} |", flush=True)


if __name__ == "__main__":
    main()
