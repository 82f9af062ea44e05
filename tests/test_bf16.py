"""bf16 on the CPU: the default training precision where the processor has it, its oneDNN
workaround, and the fused bf16 inference path."""

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.cli import default_precision
from zoo.cpu import avoid_bf16_conv_fault, has_bf16
from zoo.layers.conv import ConvBNAct

MODELS = [n for n in zoo.list_models() if not n.endswith("_wide")]
needs_bf16 = pytest.mark.skipif(
    not has_bf16(), reason="the CPU has no bf16 instructions (emulated bf16 is slow)"
)


def test_default_precision(monkeypatch):
    import zoo.cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(zoo.cli, "has_bf16", lambda: True)
    assert default_precision() == "bf16-mixed" and zoo.cli.default_config().name == "default.yaml"
    monkeypatch.setattr(zoo.cli, "has_bf16", lambda: False)  # fp32 is ~2x slower: a shorter recipe
    assert default_precision() == "32-true" and zoo.cli.default_config().name == "default_fp32.yaml"


def _conv_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each convolution's input in a bf16 autocast training forward."""
    seen, hooks = {}, []

    def keep(name: str):
        def hook(module, args, out) -> None:  # returns None: the output stays as it is
            seen.setdefault(name, args[0])

        return hook

    for name, conv in model.named_modules():
        if isinstance(conv, torch.nn.Conv2d):
            hooks.append(conv.register_forward_hook(keep(name)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    for h in hooks:
        h.remove()
    return seen


@needs_bf16
@pytest.mark.parametrize("name", MODELS)
def test_every_convolution_gets_right_bf16_weight_gradients(name):
    # oneDNN's channels_last bf16 weight gradient is wrong for dilated convolutions with 17+ input
    # channels not a multiple of 16 (zoo.cpu.avoid_bf16_conv_fault); here every convolution of the model, in the
    # shape it trains in, against fp32 on the same bf16-rounded operands
    torch.manual_seed(0)
    model = zoo.create_model(name).train()
    avoid_bf16_conv_fault(model)
    x = torch.rand(16, 1, 64, 84).contiguous(memory_format=torch.channels_last)
    for conv_name, inp in _conv_inputs(model, x).items():
        conv = model.get_submodule(conv_name)
        conv.weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(inp.detach().bfloat16())
        upstream = torch.randn_like(out, dtype=torch.float32).bfloat16()
        out.backward(upstream)
        w = conv.weight.detach().bfloat16().float().requires_grad_()
        ref = F.conv2d(
            inp.detach().bfloat16().float(), w, None, conv.stride, conv.padding, conv.dilation, conv.groups
        )
        ref.backward(upstream.float())
        error = (conv.weight.grad - w.grad).norm() / w.grad.norm()
        assert error < 2e-2, f"{name}.{conv_name}: relative weight-gradient error {error:.3g}"


def test_fault_workaround_touches_only_the_faulty_shapes():
    model = zoo.create_model("vgg4_dilated")  # widths 16-24-32-48, dilations 1, 2, 4, 8
    assert avoid_bf16_conv_fault(model) == ["features.2.conv"]  # 24 channels in, dilation 4
    assert avoid_bf16_conv_fault(model) == ["features.2.conv"]  # again: the same, nothing stacked
    assert [n for n, _ in model.named_parameters()] == [
        n for n, _ in zoo.create_model("vgg4_dilated").named_parameters()
    ]
    conv = model.features[2].conv
    x = torch.randn(2, 24, 12, 14)
    assert torch.allclose(
        conv(x), F.conv2d(x, conv.weight, conv.bias, padding=4, dilation=4), atol=1e-5
    )  # zeros add nothing


@needs_bf16
@pytest.mark.parametrize("in_channels, groups", [(24, 1), (40, 1), (24, 24), (32, 32), (48, 2)])
def test_fault_workaround_gives_right_weight_gradients(in_channels, groups):
    # shapes no registered model has, both kinds of workaround (padding, NCHW for grouped ones);
    # without it the first four are wrong at batch 8 already (ungrouped ones may even crash)
    torch.manual_seed(0)
    out_channels = 32 if groups == 1 else in_channels
    model = torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, out_channels, 3, padding=4, dilation=4, groups=groups)
    )
    model.to(memory_format=torch.channels_last)
    assert avoid_bf16_conv_fault(model) == ["0"]
    x = torch.randn(8, in_channels, 64, 84).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    w = model[0].weight.detach().bfloat16().float().requires_grad_()
    F.conv2d(x.float(), w, None, 1, 4, 4, groups).backward(upstream.float())
    assert (model[0].weight.grad - w.grad).norm() / w.grad.norm() < 2e-2


@needs_bf16
def test_fused_bf16_inference_matches_the_module_sequence():
    torch.manual_seed(0)
    layer = ConvBNAct(16, 24, dilation=2)
    with torch.no_grad():  # non-identity statistics, so a missing fold would show
        layer.bn.running_mean.uniform_(-1, 1)
        layer.bn.running_var.uniform_(0.5, 2)
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.bias.uniform_(-0.5, 0.5)
    layer.eval()
    x = torch.randn(4, 16, 20, 30)
    expected = F.relu(layer.bn(layer.conv(x)))  # the modules one by one, fp32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = layer(x)
    assert fused.dtype == torch.bfloat16
    assert ((fused.float() - expected).norm() / expected.norm()) < 1e-2


def test_predict_dtype_is_checked():
    with pytest.raises(ValueError, match="dtype must be None .* or torch.bfloat16"):
        zoo.predict(zoo.create_model("vgg4_dilated"), torch.rand(1, 1, 8, 8), dtype=torch.float16)
