"""Convolution building blocks that keep the spatial size."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn

from zoo.cpu import autocast_bf16, bf16_conv_fault_applies, conv2d_avoiding_bf16_fault, has_bf16_fault_shape


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps H and W for a stride-1 convolution with an odd kernel."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd to keep the size, found {kernel_size}")
    return dilation * (kernel_size - 1) // 2


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that trains right in CPU bf16: shapes hit by a oneDNN fault take a correct path.

    The rule and the probe live in `zoo.cpu` (`bf16_conv_fault_applies`); everywhere else this is
    `nn.Conv2d`, with the same parameters and state dict.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bf16_conv_fault_applies(self, x):
            return conv2d_avoiding_bf16_fault(self, x)
        return super().forward(x)


def avoid_bf16_conv_fault(model: nn.Module) -> list[str]:
    """Give a model's own `nn.Conv2d` layers the zoo's protection from the bf16 fault.

    Zoo models need no call: their convolutions are `Conv2d`, which take the correct path by
    themselves. This turns the plain `nn.Conv2d` layers of any other model into that class
    (parameters and state dict unchanged) and returns the names of the convolutions the rule
    covers. (It lived in `zoo.cpu` while it patched layers, and only `train.py` called it.)
    """
    covered = []
    for name, conv in model.named_modules():
        if type(conv) is nn.Conv2d:
            conv.__class__ = Conv2d
        if isinstance(conv, nn.Conv2d) and has_bf16_fault_shape(conv):
            covered.append(name)
    return covered


class ConvBNAct(nn.Sequential):
    """Conv2d ("same" padding) then optional BatchNorm2d then optional ReLU.

    Args:
        groups: `in_channels` (= `out_channels`) makes it depthwise.
        norm, act: add BatchNorm2d / ReLU after the convolution.
        bias: give the convolution a bias (the seed's networks do, even before BN).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: bool = True,
        act: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation),
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and _fast_inference_ok(x, self):
            return self._fused_inference(x)
        return super().forward(x)

    def _fused_inference(self, x: torch.Tensor) -> torch.Tensor:
        # Inference on CPU: batch norm folded into the convolution, ReLU fused into oneDNN's
        # kernel, channels_last: one pass over the activations instead of three (measured ~2x,
        # benchmarks/run.py). Same result as the module sequence up to float rounding. In bf16
        # (a bf16 input or model, or CPU autocast to bf16) the folding is done in fp32, then cast.
        dtype = fused_dtype(x)
        conv = self.conv

        def fp32(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.float()

        weight, bias = fp32(conv.weight), fp32(conv.bias)
        if hasattr(self, "bn"):
            bn = self.bn
            scale = fp32(bn.weight) * torch.rsqrt(fp32(bn.running_var) + bn.eps)
            weight = weight * scale.reshape(-1, 1, 1, 1)
            mean = fp32(bn.running_mean)
            bias = (bias - mean if bias is not None else -mean) * scale + fp32(bn.bias)
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(dtype, memory_format=torch.channels_last),
            weight.to(dtype, memory_format=torch.channels_last),
            None if bias is None else bias.to(dtype),
            conv.padding,
            conv.stride,
            conv.dilation,
            conv.groups,
            "relu" if hasattr(self, "act") else "none",
            [],
            "",
        )


def fused_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the fused CPU path computes in: bf16 for bf16 inputs or under CPU bf16 autocast."""
    return torch.bfloat16 if x.dtype == torch.bfloat16 or autocast_bf16() else torch.float32


def _fast_inference_ok(x: torch.Tensor, module: nn.Module) -> bool:
    """oneDNN's fused convolution: CPU, fp32 or bf16, nothing for autograd to record, not traced."""
    return (
        eager_inference(x, module)
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and all(p.dtype in (torch.float32, torch.bfloat16) for p in module.parameters())
        and torch.backends.mkldnn.is_available()
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
