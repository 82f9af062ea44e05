"""The CPU fast paths, in one place behind one switch, so that every layer reads as plain PyTorch.

- fused inference: convolution + batch norm + ReLU as one oneDNN call (`fused_conv_bn_act`);
- running-max pooling: stride-1 max pooling as running maxima over shifted views (`max_pool_stride1`);
- the bf16 fault: dilated convolutions whose bf16 weight gradient oneDNN gets wrong take a
  correct form (`bf16_conv_fault_applies`, `conv2d_avoiding_bf16_fault`);
- the bf16 depthwise stall: shapes whose kernel oneDNN takes minutes to build
  (`bf16_depthwise_build_stalls`; `BoxMean` sums those in fp32);
- and the process settings: glibc's malloc keeping freed memory, bf16 detection.

Each path applies only where it gives the plain path's result (up to float rounding: tests
compare them). `ZOO_CPU_FAST_PATHS=0`, or `with zoo.cpu.fast_paths(False):`, runs every layer's
plain PyTorch form instead (then CPU bf16 training meets the oneDNN fault again). A PyTorch
without a private operator used here falls back to the plain form, with a one-line warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

_fast_paths = os.environ.get("ZOO_CPU_FAST_PATHS", "1") != "0"


def fast_paths_enabled() -> bool:
    """Whether the CPU fast paths are on (the default; `ZOO_CPU_FAST_PATHS=0` turns them off)."""
    return _fast_paths


@contextlib.contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Turn the CPU fast paths on or off inside a `with` block (for comparing, or to rule them out)."""
    global _fast_paths
    before, _fast_paths = _fast_paths, bool(enabled)
    try:
        yield
    finally:
        _fast_paths = before


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_applied = False
_decided = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed large blocks instead of returning them to the OS.

    Every CPU forward (and training step) allocates and frees the same activation-sized buffers;
    by default glibc unmaps large blocks on free (its threshold stops growing at 32 MB, and
    activations are that big at batch 32), so every call page-faults them back in, zero-filled.
    Keeping them makes training and inference faster (benchmarks/profile_step.py counts the
    faults; docs/notes/2026-12-07-kernel-choices.md); the cost is that the process keeps its peak
    memory, as PyTorch's CUDA caching allocator does. A process-wide setting, so nothing applies
    it behind your back: `train.py` and the benchmarks call it once at start; an application
    that wants the speed calls it once too. `ZOO_KEEP_FREED_MEMORY=0` turns it off.
    Returns whether it is in effect.
    """
    global _applied, _decided
    if not _decided:
        _decided = True
        _applied = os.environ.get("ZOO_KEEP_FREED_MEMORY", "1") != "0" and _mallopt_keep()
    return _applied


def _mallopt_keep() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31) == 1


def has_bf16() -> bool:
    """Whether this CPU executes bf16 matrix instructions (AVX512-BF16 or AMX), not emulates them."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_depthwise_build_stalls(channels: int, kernel_width: int) -> bool:
    """Whether oneDNN would take minutes to build a CPU bf16 depthwise convolution of this shape.

    PyTorch 2.13's oneDNN (3.12) generates the kernel of a channels_last bf16 depthwise
    convolution with 2-16 channels and a kernel at least 15 wide for minutes on end, forward and
    backward, k x k or 1 x k (k x 1, NCHW, fp32 and more channels are unaffected), measured on
    AVX512-BF16; `tools/bf16_depthwise_stall.py` shows it. Layout is left out of the test: the
    way around (fp32) is always correct.
    """
    return 2 <= channels <= 16 and kernel_width >= 15


# Run in a child process: at some shapes the fault reads out of bounds and crashes the process.
# Prints the relative weight-gradient error of a dilated bf16 channels_last convolution against
# fp32 on the same rounded operands, for 24 input channels in one group and depthwise.
_BF16_CONV_PROBE = """
import torch, torch.nn.functional as F
torch.manual_seed(0)
for groups, out_channels in ((1, 16), (24, 24)):
    x = torch.randn(1, 24, 32, 32).bfloat16().contiguous(memory_format=torch.channels_last)
    w = torch.randn(out_channels, 24 // groups, 3, 3).bfloat16()
    w = w.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = F.conv2d(x, w, None, 1, 2, 2, groups)
    g = torch.randn_like(y)
    y.backward(g)
    w32 = w.detach().float().requires_grad_()
    F.conv2d(x.float(), w32, None, 1, 2, 2, groups).backward(g.float())
    print(float((w.grad.float() - w32.grad).norm() / w32.grad.norm()))
"""
_bf16_conv_fault: bool | None = None  # None: not probed yet


@torch.compiler.disable
def bf16_conv_fault() -> bool:
    """Whether this PyTorch computes wrong bf16 channels_last weight gradients for dilated convolutions.

    oneDNN's fault (`tools/bf16_conv_fault.py` reproduces it without the zoo): a dilated
    convolution whose input channels per group are not a multiple of 16 gets a wrong, often
    non-finite, weight gradient in bf16 channels_last, and some shapes crash the process. Probed
    once per process, in a child process, the first time a training step could hit it; a probe
    that cannot run counts as the fault (the way around it is always correct).
    `ZOO_BF16_CONV_FAULT=1` or `0` states the answer instead of probing.
    """
    global _bf16_conv_fault
    if _bf16_conv_fault is None:
        stated = os.environ.get("ZOO_BF16_CONV_FAULT")
        _bf16_conv_fault = stated != "0" if stated in ("0", "1") else _probe_bf16_conv_fault()
    return _bf16_conv_fault


def _probe_bf16_conv_fault() -> bool:
    try:
        run = subprocess.run(
            [sys.executable, "-c", _BF16_CONV_PROBE], capture_output=True, text=True, timeout=120
        )
        errors = [float(line) for line in run.stdout.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return True
    # the fault's errors are 0.6-1.4 or non-finite; bf16's own rounding gives about 0.002
    return run.returncode != 0 or len(errors) != 2 or not all(e < 0.05 for e in errors)


def autocast_bf16() -> bool:
    """Whether CPU autocast to bf16 is on."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def has_bf16_fault_shape(conv: nn.Conv2d) -> bool:
    """Dilated, with input channels per group not a multiple of 16: the shapes the fault hits."""
    return max(conv.dilation) >= 2 and (conv.in_channels // conv.groups) % 16 != 0


def bf16_conv_fault_applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv(x)` would hit oneDNN's bf16 weight-gradient fault (`bf16_conv_fault`).

    The rule: a dilated convolution with input channels per group not a multiple of 16, on the
    CPU, computing in bf16, with a weight gradient to compute, on a PyTorch whose probe shows the
    fault. Everything but the probe is a few attribute reads, so fp32, inference and CUDA cost
    nothing; the probe runs only when all the rest holds.
    """
    return (
        _fast_paths
        and has_bf16_fault_shape(conv)
        and not isinstance(x, torch.fx.Proxy)
        and x.device.type == "cpu"
        and torch.is_grad_enabled()
        and conv.weight.requires_grad
        and (autocast_bf16() or x.dtype == torch.bfloat16 or conv.weight.dtype == torch.bfloat16)
        and bf16_conv_fault()
    )


def conv2d_avoiding_bf16_fault(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` computed in a form whose bf16 weight gradient oneDNN gets right.

    Ungrouped: input and weight zero-padded to the next multiple of 16 channels, channels_last
    (the same values and gradients; a third more arithmetic at 24 channels, but no layout
    conversions, which cost vgg4_dilated's step more when it ran in NCHW). Grouped: NCHW input
    and weight, the layout without the fault (a depthwise weight (C, 1, k, k) counts as
    contiguous in either layout, hence the clone).
    """
    if conv.groups == 1:
        pad = (0, 0, 0, 0, 0, -conv.in_channels % 16)
        x = F.pad(x, pad).contiguous(memory_format=torch.channels_last)
        weight = F.pad(conv.weight, pad).contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous()
        weight = conv.weight.clone(memory_format=torch.contiguous_format)
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def is_traced(x: torch.Tensor) -> bool:
    """Whether `x` flows through a trace or an export (torch.fx, jit, dynamo, ONNX).

    Such graphs keep the plain operators (zoo.receptive_field's fx tracer reads the modules), so
    the eager-only fast paths step aside.
    """
    return (
        isinstance(x, torch.fx.Proxy)
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


def eager_inference(x: torch.Tensor, module: nn.Module | None = None) -> bool:
    """Whether a call on `x` (with `module`'s parameters) runs eagerly with nothing for autograd to record.

    The condition of the inference-only fast paths: no gradient can be asked of what they
    compute, and no trace or export sees them (`is_traced`).
    """
    if is_traced(x):  # first: a traced tensor's attributes are symbolic
        return False
    params = () if module is None else module.parameters()
    return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)))


_fused_conv_op: object | None = None  # None: not looked up yet; False: this PyTorch lacks it


def _fused_conv() -> object | None:
    """oneDNN's fused convolution operator, or None (with one warning) where this PyTorch lacks it."""
    global _fused_conv_op
    if _fused_conv_op is None:
        try:
            _fused_conv_op = torch.ops.mkldnn._convolution_pointwise
        except (AttributeError, RuntimeError):
            _fused_conv_op = False
            warnings.warn(
                f"zoo.cpu: PyTorch {torch.__version__} has no torch.ops.mkldnn._convolution_pointwise; "
                "CPU inference runs convolution, batch norm and ReLU unfused",
                RuntimeWarning,
                stacklevel=3,
            )
    return _fused_conv_op or None


def fused_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the fused CPU path computes in: bf16 for bf16 inputs or under CPU bf16 autocast."""
    return torch.bfloat16 if x.dtype == torch.bfloat16 or autocast_bf16() else torch.float32


def fused_conv_applies(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether `fused_conv_bn_act` may run `module` on `x`: CPU inference in fp32 or bf16, eager."""
    return (
        _fast_paths
        and not module.training
        and eager_inference(x, module)
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and all(p.dtype in (torch.float32, torch.bfloat16) for p in module.parameters())
        and torch.backends.mkldnn.is_available()
        and _fused_conv() is not None
    )


def fused_conv_bn_act(
    conv: nn.Conv2d, bn: nn.BatchNorm2d | None, relu: bool, x: torch.Tensor
) -> torch.Tensor:
    """`relu(bn(conv(x)))` for inference as one oneDNN call: batch norm folded into the weights.

    One pass over the activations instead of three, channels_last (about 2x, benchmarks/run.py).
    In bf16 (a bf16 input or model, or CPU autocast to bf16) the folding is done in fp32, then cast.
    """
    dtype = fused_dtype(x)

    def fp32(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.float()

    weight, bias = fp32(conv.weight), fp32(conv.bias)
    if bn is not None:
        scale = fp32(bn.weight) * torch.rsqrt(fp32(bn.running_var) + bn.eps)
        weight = weight * scale.reshape(-1, 1, 1, 1)
        mean = fp32(bn.running_mean)
        bias = (bias - mean if bias is not None else -mean) * scale + fp32(bn.bias)
    return _fused_conv()(
        x.to(dtype, memory_format=torch.channels_last),
        weight.to(dtype, memory_format=torch.channels_last),
        None if bias is None else bias.to(dtype),
        conv.padding,
        conv.stride,
        conv.dilation,
        conv.groups,
        "relu" if relu else "none",
        [],
        "",
    )


def max_pool_stride1(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k max pooling at stride 1 (no padding), as `F.max_pool2d(x, k, stride=1)` computes it.

    For eager inference: running maxima over shifted views, rows then columns; the same values,
    and much faster than PyTorch 2.13's CPU max_pool2d on the large-batch small maps that
    space-to-batch makes (docs/notes/2026-12-07-kernel-choices.md). With autograd, max pooling keeps its
    switches (one winner per window; torch.maximum would split the gradient between ties), and
    traced graphs and exports keep one MaxPool node.
    """
    if not (_fast_paths and eager_inference(x)):
        return F.max_pool2d(x, k, stride=1)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    rows = x[..., :w]
    for i in range(1, k):
        rows = torch.maximum(rows, x[..., i : i + w])
    out = rows[..., :h, :]
    for i in range(1, k):
        out = torch.maximum(out, rows[..., i : i + h, :])
    return out
