"""bf16 on the CPU: the default training precision where the processor has it, training that
steers around a oneDNN fault in any loop, and the fused bf16 inference path."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
import zoo.cpu
from zoo.cpu import has_bf16
from zoo.layers.conv import Conv2d, ConvBNAct, avoid_bf16_conv_fault
from zoo.training.cli import default_precision

MODELS = [n for n in zoo.list_models() if not n.endswith("_wide")]
needs_bf16 = pytest.mark.skipif(
    not has_bf16(), reason="the CPU has no bf16 instructions (emulated bf16 is slow)"
)


def test_default_precision(monkeypatch):
    import zoo.training.cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(zoo.training.cli, "has_bf16", lambda: True)
    assert default_precision() == "bf16-mixed"
    assert [p.name for p in zoo.training.cli.default_config_files()] == ["default.yaml"]
    monkeypatch.setattr(zoo.training.cli, "has_bf16", lambda: False)  # fp32 is ~2x slower: a shorter recipe
    assert default_precision() == "32-true"
    assert [p.name for p in zoo.training.cli.default_config_files()] == ["default.yaml", "default_fp32.yaml"]


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
    # oneDNN's channels_last bf16 weight gradient is wrong for dilated convolutions with input
    # channels per group not a multiple of 16 (zoo.cpu.bf16_conv_fault_applies); here every
    # convolution of the model as created, in the shape it trains in, against fp32 on the same
    # bf16-rounded operands
    torch.manual_seed(0)
    model = zoo.create_model(name).train()
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


def _weight_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> dict:
    """One plain-loop backward of cross-entropy: the convolution weights' gradients."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.dim() == 4}


@needs_bf16
@pytest.mark.parametrize("name", MODELS)
def test_plain_loop_bf16_autocast_gradients_match_fp32_as_nchw_does(name, monkeypatch):
    # what a user's own training loop does, with the model as created (channels_last weights) and
    # nothing else: its bf16 weight gradients are as close to fp32 as those of the same model in
    # NCHW, the layout without the fault, on the same batch. Conv biases before batch norm are
    # left out: their exact gradient is zero, so a relative error means nothing there.
    torch.manual_seed(0)
    model = zoo.create_model(name, in_channels=3, num_classes=5).train()
    nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x, y = torch.rand(4, 3, 64, 64), torch.randint(0, 5, (4, 64, 64))
    exact = _weight_gradients(model, x, y, bf16=False)
    as_created = _weight_gradients(model, x, y, bf16=True)
    monkeypatch.setattr(zoo.cpu, "_bf16_conv_fault", False)  # the reference takes the plain path
    reference = _weight_gradients(nchw, x, y, bf16=True)
    for n, g in exact.items():
        assert torch.isfinite(as_created[n]).all(), f"{name}.{n}: non-finite bf16 gradient"
        error = ((as_created[n].float() - g).norm() / g.norm()).item()
        noise = ((reference[n].float() - g).norm() / g.norm()).item()
        assert error <= 1.5 * noise + 0.05, f"{name}.{n}: bf16 error {error:.3g}, NCHW's {noise:.3g}"


def _plain_fit(model: torch.nn.Module, bf16: bool, steps: int = 40) -> list[float]:
    """AdamW on one fixed batch whose labels need context: 4 bins of a 9x9 local mean."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 48, 48, generator=g)
    y = (F.avg_pool2d(x[:, :1], 9, 1, 4, count_include_pad=False)[:, 0] * 4).clamp(0, 3.999).long()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _check_bf16_fit_like_fp32(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, in_channels=3, num_classes=4).train()
    twin = copy.deepcopy(model)
    fp32, bf16 = _plain_fit(model, bf16=False), _plain_fit(twin, bf16=True)
    assert all(math.isfinite(v) for v in bf16), f"{name}: bf16 loss went non-finite: {bf16[-5:]}"
    assert fp32[-1] < 0.5 * fp32[0]  # the task is learnable in 40 steps
    # lowered like fp32: within a fifth of fp32's final loss, or of its drop
    assert bf16[-1] <= fp32[-1] + 0.2 * (fp32[0] - fp32[-1]), (
        f"{name}: fp32 {fp32[-1]:.3f}, bf16 {bf16[-1]:.3f}"
    )


@needs_bf16
def test_plain_loop_bf16_autocast_fit_lowers_the_loss_like_fp32():
    # vgg4_dilated has a 24-channel dilation-4 convolution: without the workaround its bf16 loss
    # turns NaN within these steps
    _check_bf16_fit_like_fp32("vgg4_dilated")


@needs_bf16
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MODELS if n != "vgg4_dilated"])
def test_plain_loop_bf16_autocast_fit_lowers_the_loss_like_fp32_everywhere(name):
    _check_bf16_fit_like_fp32(name)


@needs_bf16
def test_a_users_own_module_holding_a_zoo_model_gets_right_gradients():
    # the protection sits in the zoo's convolutions, so any module around them keeps it
    torch.manual_seed(0)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 1, 1)
            self.body = zoo.create_model("vgg4_dilated")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(self.stem(x))

    model = Wrapper().bfloat16().train()  # bf16 weights, no autocast
    conv = model.body.features[2].conv  # 24 channels in, dilation 4
    seen = {}

    def keep(module, args, out) -> None:
        seen["input"] = args[0].detach()
        out.register_hook(lambda grad: seen.setdefault("grad_output", grad))

    conv.register_forward_hook(keep)
    model(torch.rand(8, 3, 64, 84).bfloat16()).float().square().mean().backward()
    # the layer's weight gradient against fp32 from the same input and output gradient
    w = conv.weight.detach().float().requires_grad_()
    F.conv2d(seen["input"].float(), w, None, 1, 4, 4).backward(seen["grad_output"].float())
    assert torch.isfinite(conv.weight.grad).all()
    assert (conv.weight.grad.float() - w.grad).norm() / w.grad.norm() < 2e-2


def test_fault_rule_covers_exactly_the_faulty_shapes():
    # every registered model: the convolutions that are dilated with input channels per group
    # not a multiple of 16, and only those, are the zoo's protected Conv2d or need no protection
    for name in zoo.list_models():
        for conv_name, conv in zoo.create_model(name).named_modules():
            if isinstance(conv, torch.nn.Conv2d) and max(conv.dilation) >= 2:
                assert isinstance(conv, Conv2d), f"{name}.{conv_name} is a dilated plain nn.Conv2d"
    conv = Conv2d(24, 32, 3, padding=4, dilation=4)
    assert zoo.cpu.has_bf16_fault_shape(conv)
    assert zoo.cpu.has_bf16_fault_shape(Conv2d(24, 24, 3, padding=2, dilation=2, groups=24))
    assert not zoo.cpu.has_bf16_fault_shape(Conv2d(32, 32, 3, padding=2, dilation=2))
    assert not zoo.cpu.has_bf16_fault_shape(Conv2d(24, 32, 3, padding=1))


def test_fault_rule_costs_nothing_where_the_fault_cannot_occur(monkeypatch):
    # fp32, inference, frozen weights and other devices never reach the probe
    def no_probe() -> bool:
        raise AssertionError("probed")

    monkeypatch.setattr(zoo.cpu, "_bf16_conv_fault", None)
    monkeypatch.setattr(zoo.cpu, "_probe_bf16_conv_fault", no_probe)
    conv = Conv2d(24, 32, 3, padding=4, dilation=4)
    x = torch.rand(2, 24, 16, 16)
    applies = zoo.cpu.bf16_conv_fault_applies
    assert not applies(conv, x)  # fp32 training
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            assert not applies(conv, x)  # inference
        assert not applies(conv, x.to("meta"))  # another device
        conv.weight.requires_grad_(False)
        assert not applies(conv, x)  # no weight gradient to get wrong
        conv.weight.requires_grad_(True)
        assert not applies(Conv2d(32, 32, 3, padding=2, dilation=2), torch.rand(2, 32, 8, 8))
    conv(x).sum().backward()  # an fp32 training step end to end


def test_fault_rule_follows_the_probe(monkeypatch):
    conv = Conv2d(24, 32, 3, padding=4, dilation=4)
    x = torch.rand(2, 24, 16, 16).bfloat16()
    for stated, expected in (("1", True), ("0", False)):
        monkeypatch.setattr(zoo.cpu, "_bf16_conv_fault", None)
        monkeypatch.setenv("ZOO_BF16_CONV_FAULT", stated)
        assert zoo.cpu.bf16_conv_fault() is expected
        assert zoo.cpu.bf16_conv_fault_applies(conv, x) is expected  # bf16 input, no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert zoo.cpu.bf16_conv_fault_applies(conv, x.float()) is expected
    # a probe that cannot run counts as the fault: the way around it is always correct
    monkeypatch.setattr(zoo.cpu.sys, "executable", "/nonexistent/python")
    assert zoo.cpu._probe_bf16_conv_fault() is True


@needs_bf16
def test_probe_agrees_with_the_standalone_reproduction():
    # tools/bf16_conv_fault.py measures the fault without the zoo, each shape in a child process;
    # its first shape must read WRONG exactly when the probe reports the fault
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "bf16_conv_fault.py"
    spec = importlib.util.spec_from_file_location("bf16_conv_fault", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    reproduced = "WRONG" in tool.run_case((1, 20, 40, 2, 1), "channels_last")
    assert tool.run_case((1, 20, 40, 2, 1), "nchw").endswith(tuple("0123456789"))  # NCHW is right
    assert zoo.cpu._probe_bf16_conv_fault() is reproduced


@needs_bf16
@pytest.mark.parametrize("in_channels, groups", [(24, 1), (40, 1), (24, 24), (32, 32), (48, 2)])
def test_own_convolutions_get_the_protection(in_channels, groups):
    # avoid_bf16_conv_fault turns a model's plain nn.Conv2d into the zoo's; shapes no registered
    # model has, both ways around (padding, NCHW for grouped ones); without it the first four are
    # wrong at batch 8 already (ungrouped ones may even crash)
    torch.manual_seed(0)
    out_channels = 32 if groups == 1 else in_channels
    model = torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, out_channels, 3, padding=4, dilation=4, groups=groups)
    )
    model.to(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert avoid_bf16_conv_fault(model) == ["0"]
    assert isinstance(model[0], Conv2d) and all(
        torch.equal(v, state[k]) for k, v in model.state_dict().items()
    )
    x = torch.randn(8, in_channels, 64, 84).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    w = model[0].weight.detach().bfloat16().float().requires_grad_()
    F.conv2d(x.float(), w, None, 1, 4, 4, groups).backward(upstream.float())
    assert (model[0].weight.grad - w.grad).norm() / w.grad.norm() < 2e-2


def test_fault_path_computes_the_plain_convolution():
    # zeros add nothing, and NCHW is a layout: both ways around give the plain result (fp32 here)
    torch.manual_seed(0)
    for groups in (1, 24):
        conv = Conv2d(24, 24, 3, padding=4, dilation=4, groups=groups).to(memory_format=torch.channels_last)
        x = torch.randn(2, 24, 12, 14, requires_grad=True)
        fast = zoo.cpu.conv2d_avoiding_bf16_fault(conv, x)
        fast.sum().backward()
        grads = (x.grad.clone(), conv.weight.grad.clone())
        x.grad = conv.weight.grad = None
        plain = F.conv2d(x, conv.weight, conv.bias, padding=4, dilation=4, groups=groups)
        plain.sum().backward()
        assert torch.allclose(fast, plain, atol=1e-5)
        assert torch.allclose(grads[0], x.grad, atol=1e-5) and torch.allclose(
            grads[1], conv.weight.grad, atol=1e-4
        )


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
