"""zoo.explain: hand-derived attributions, a second implementation of the ReLU rules, every model.

Expected values never come from captum: small networks are worked by hand, and the registry's
models are checked against ReLU rules written here as autograd Functions (a different mechanism
from captum's module hooks) and against finite differences.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import random_batchnorm

import zoo
from zoo.attribution import METHODS, concentration, explain

ALL = [pytest.param(n, marks=pytest.mark.slow) if n.endswith("_wide") else n for n in zoo.list_models()]
PRETRAINED = zoo.list_models(pretrained=True)


def conv1x1(weight) -> nn.Conv2d:
    w = torch.tensor(weight, dtype=torch.float32)
    conv = nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False)
    conv.weight.data.copy_(w[:, :, None, None])
    return conv


def one_relu_layer() -> nn.Module:
    # h = W1 x with x = (1, -1): units a, c are active (h = 1), b, d are not (h = -1); the read-out
    # v weights them 2, 3, -1, -4, so the three rules keep different units
    w1 = [[2, 1], [1, 2], [0, -1], [-1, 0]]
    v = [[2, 3, -1, -4]]
    return nn.Sequential(conv1x1(w1), nn.ReLU(), conv1x1(v))


ONE_LAYER_X = torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1)
ONE_LAYER_EXPECTED = {
    "gradient": [4.0, 3.0],  # 2*a + (-1)*c = 2*(2, 1) - (0, -1)
    "guided": [4.0, 2.0],  # only units active *and* with positive gradient: 2*a
    "deconvnet": [7.0, 8.0],  # every unit with positive gradient: 2*a + 3*b = (4+3, 2+6)
    "integrated_gradients": [4.0, -3.0],  # no bias, so score(t x) = t score(x): IG = x * gradient
}


@pytest.mark.parametrize("method", METHODS)
def test_one_relu_layer_by_hand(method):
    got = explain(one_relu_layer(), ONE_LAYER_X, 0, pixel=(0, 0), method=method)
    torch.testing.assert_close(got.flatten(), torch.tensor(ONE_LAYER_EXPECTED[method]))


def test_integrated_gradients_add_up_to_the_score_by_hand():
    # score(x) = 2*1 + (-1)*1 = 1 and score(0) = 0
    got = explain(one_relu_layer(), ONE_LAYER_X, 0, pixel=(0, 0), method="integrated_gradients")
    assert got.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_linear_network_every_rule_is_the_kernel(method):
    # no ReLU: all rules are the gradient; pixel (y, x)'s logit of a 3x3 "same" conv reads
    # input (y + dy, x + dx) with weight w[1 + dy, 1 + dx], so the map is the kernel around it
    torch.manual_seed(3)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    x = torch.rand(1, 1, 7, 9)
    got = explain(conv, x, 1, pixel=(3, 5), method=method, steps=4)
    grad = torch.zeros(1, 1, 7, 9)
    grad[0, 0, 2:5, 4:7] = conv.weight[1, 0].detach()
    expected = grad * x if method == "integrated_gradients" else grad  # linear: IG = x * gradient
    torch.testing.assert_close(got, expected)


def mlp_reference(layers: list[torch.Tensor], x: torch.Tensor, target: int, rule: str) -> torch.Tensor:
    """The rules as matrix algebra for x -> W1 -> ReLU -> W2 -> ReLU -> W3 (no biases)."""
    pre, h = [], x
    for w in layers[:-1]:
        pre.append(w @ h)
        h = torch.clamp(pre[-1], min=0)
    g = layers[-1][target]
    for w, p in zip(reversed(layers[:-1]), reversed(pre)):
        if rule == "gradient":
            g = g * (p > 0)
        elif rule == "guided":
            g = torch.clamp(g * (p > 0), min=0)
        else:  # deconvnet
            g = torch.clamp(g, min=0)
        g = w.T @ g
    return g


@pytest.mark.parametrize("rule", ["gradient", "guided", "deconvnet"])
def test_two_layer_classifier_against_matrix_algebra(rule):
    torch.manual_seed(5)
    sizes = [6, 8, 5, 3]
    weights = [torch.randn(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
    linears = [nn.Linear(i, o, bias=False) for i, o in zip(sizes[:-1], sizes[1:])]
    for lin, w in zip(linears, weights):
        lin.weight.data.copy_(w)
    model = nn.Sequential(nn.Flatten(), linears[0], nn.ReLU(), linears[1], nn.ReLU(inplace=True), linears[2])
    x = torch.randn(1, 6, 1, 1)
    got = explain(model, x, 2, method=rule)
    torch.testing.assert_close(got.flatten(), mlp_reference(weights, x.flatten(), 2, rule))


# -- a second implementation of the rules, for every registered model --


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rule):
        ctx.rule = rule
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "guided":
            return g.clamp(min=0) * (x > 0), None
        return g.clamp(min=0), None  # deconvnet


class RuleReLU(nn.Module):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def forward(self, x):
        return _RuleReLU.apply(x, self.rule)


def with_rule(model: nn.Module, rule: str) -> nn.Module:
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, RuleReLU(rule))
    return model


def reference(
    model: nn.Module, x: torch.Tensor, target: int, weights: torch.Tensor, rule: str
) -> torch.Tensor:
    net = model if rule == "gradient" else with_rule(model, rule)
    x = x.clone().requires_grad_(True)
    (net(x)[:, target] * weights).sum().backward()
    return x.grad


@pytest.mark.parametrize("name", ALL)
def test_every_model_matches_the_second_implementation(name):
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model(name))
    x = torch.rand(2, 1, 24, 30)
    weights = torch.zeros(2, 24, 30)
    weights[:, 6:16, 10:22] = 1
    for rule in ("gradient", "guided", "deconvnet"):
        got = explain(model, x, 4, mask=weights.bool(), method=rule)
        expected = reference(model, x, 4, weights, rule)
        scale = expected.abs().max().item()
        assert scale > 0, (name, rule)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale, msg=f"{name} {rule}")


@pytest.mark.parametrize("name", ALL)
def test_every_models_gradient_matches_finite_differences(name):
    # float64, so a central difference is exact to ~1e-8; the fused fp32 path is not involved
    torch.manual_seed(1)
    model = random_batchnorm(zoo.create_model(name)).double()
    x = torch.rand(1, 1, 22, 26, dtype=torch.float64)
    grad = explain(model, x, 2, pixel=(11, 13), method="gradient")
    direction = torch.randn_like(x)
    eps = 1e-6
    with torch.no_grad():
        up, down = model(x + eps * direction)[0, 2, 11, 13], model(x - eps * direction)[0, 2, 11, 13]
    assert (grad * direction).sum().item() == pytest.approx(
        ((up - down) / (2 * eps)).item(), rel=1e-5, abs=1e-9
    )


@pytest.mark.parametrize("name", ALL)
def test_every_models_integrated_gradients_are_complete(name):
    torch.manual_seed(2)
    model = random_batchnorm(zoo.create_model(name))
    x = torch.rand(1, 1, 20, 24)
    mask = torch.zeros(20, 24, dtype=torch.bool)
    mask[5:15, 6:18] = True
    attr = explain(model, x, 6, mask=mask, method="integrated_gradients", steps=32)
    with torch.no_grad():
        scores = [(model(v)[0, 6] * mask).sum().item() for v in (x, torch.zeros_like(x))]
    gap = scores[0] - scores[1]
    # 32 Gauss-Legendre points on a piecewise-smooth path: a few percent of the total change
    assert attr.sum().item() == pytest.approx(gap, rel=0.05, abs=0.02 * (abs(scores[0]) + abs(scores[1])))


@pytest.mark.parametrize("name", PRETRAINED)
def test_every_pretrained_model_explains_its_own_prediction(name):
    from zoo.data.splits import test_split

    images, labels = test_split("m2nist")
    model = zoo.create_model(name, pretrained=True)
    image = images[3]
    target = int(np.unique(labels[3])[0])  # a digit in the image
    for method in METHODS:
        attr = explain(model, image, target, method=method, steps=8)
        assert attr.shape == image.shape and attr.dtype == torch.float32
        assert torch.isfinite(attr).all() and attr.abs().sum() > 0, (name, method)
    # the explained digit's glyph holds more of the guided map than the rest of the image
    ys, xs = np.nonzero(labels[3] == target)
    box = torch.tensor([[ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]])
    share = concentration(explain(model, image, target, method="guided")[None], box)
    assert share.item() > 0.3


def test_uint8_images_are_explained_as_normalised_floats():
    model = random_batchnorm(zoo.create_model("vgg4_dilated"))
    rng = np.random.default_rng(0)
    image = (rng.random((2, 30, 40)) * 255).astype(np.uint8)
    got = explain(model, image, 1, pixel=(4, 5), method="guided")
    expected = explain(
        model, torch.from_numpy(image).float()[:, None] / 255, 1, pixel=(4, 5), method="guided"
    )
    assert got.shape == (2, 30, 40)
    torch.testing.assert_close(got, expected.reshape(2, 30, 40))


def test_default_mask_is_the_pixels_predicted_as_the_class():
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model("vgg4_dilated"))
    x = torch.rand(1, 1, 24, 30)
    with torch.no_grad():
        predicted = model(x).argmax(1)[0]
    target = int(predicted.flatten().mode().values)
    got = explain(model, x, target, method="gradient")
    torch.testing.assert_close(got, explain(model, x, target, mask=predicted == target, method="gradient"))


def test_classifier_explains_the_class_logit():
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model("vgg4_dilated", head="classify"))
    x = torch.rand(1, 1, 28, 28)
    x_ = x.clone().requires_grad_(True)
    model(x_)[0, 3].backward()
    torch.testing.assert_close(explain(model, x, 3, method="gradient"), x_.grad)
    with pytest.raises(ValueError, match="class logits"):
        explain(model, x, 3, pixel=(1, 1))


def test_the_model_comes_back_unchanged():
    torch.manual_seed(0)
    model = zoo.create_model("resnet18_dilated")
    model.train()
    model.head.eval()  # a mix of modes
    for p in next(model.children()).parameters():
        p.requires_grad_(False)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    hooks = {
        n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for n, m in model.named_modules()
    }
    x = torch.rand(1, 1, 20, 24)
    for method in METHODS:
        explain(model, x, 2, pixel=(5, 5), method=method, steps=4)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    after = {
        n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for n, m in model.named_modules()
    }
    assert after == hooks and calls  # the user's hook stayed and ran
    for k, v in model.state_dict().items():  # BN statistics untouched: explained in eval mode
        assert torch.equal(v, state[k]), k


class GeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.GELU()
        self.out = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.out(self.act(self.conv(x)))


class FunctionalReluBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))


@pytest.mark.parametrize("method", ["guided", "deconvnet"])
def test_relu_rules_name_the_layer_they_cannot_explain(method):
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"layer 'act' \(GELU\)"):
        explain(GeluNet(), x, 0, pixel=(2, 2), method=method)
    net = nn.Sequential(FunctionalReluBlock(), nn.Conv2d(3, 2, 1))
    with pytest.raises(ValueError, match=r"layer '0' \(FunctionalReluBlock\).*relu"):
        explain(net, x, 0, pixel=(2, 2), method=method)
    # gradients and integrated gradients have no rule to replace
    assert explain(GeluNet(), x, 0, pixel=(2, 2), method="gradient").shape == x.shape


def test_bad_arguments_say_what_was_expected():
    model = random_batchnorm(zoo.create_model("vgg4_dilated"))
    x = torch.rand(1, 1, 16, 16)
    cases = [
        (dict(target=0, method="lrp"), "method must be one of"),
        (dict(target=11), r"class index in 0\.\.10"),
        (dict(target=0, mask=torch.ones(16, 16, dtype=torch.bool), pixel=(1, 1)), "not both"),
        (dict(target=0, mask=torch.ones(16, 16)), "boolean"),
        (dict(target=0, mask=torch.ones(8, 8, dtype=torch.bool)), r"\(16, 16\) or \(1, 16, 16\)"),
        (dict(target=0, mask=torch.zeros(16, 16, dtype=torch.bool)), "selects no pixel"),
        (dict(target=0, pixel=(16, 0)), "must lie in the 16x16 image"),
        (dict(target=0, method="integrated_gradients", steps=0), "steps must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            explain(model, x, **kwargs)
    with torch.no_grad():
        absent = next(c for c in range(11) if c not in model(x).argmax(1).unique())
    with pytest.raises(ValueError, match=f"predicts no pixel as class {absent}"):
        explain(model, x, absent)


def test_concentration_on_a_hand_built_map():
    a = torch.zeros(2, 1, 4, 5)
    a[0, 0, 1, 1] = 3.0  # inside box 0
    a[0, 0, 3, 4] = -1.0  # outside: counts by magnitude
    a[1, 0, 0, 0] = 2.0  # outside box 1
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 4, 5]])
    torch.testing.assert_close(concentration(a, boxes), torch.tensor([0.75, 0.0]))
    assert torch.isnan(concentration(torch.zeros(1, 4, 5), boxes[:1])).all()


def test_importing_zoo_does_not_import_captum():
    # nothing of the explain extra is loaded, so training and inference pay nothing for it
    code = "import sys, zoo; zoo.create_model('vgg4_dilated'); assert 'captum' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_explain_command_writes_the_figure(tmp_path, capsys):
    from zoo.__main__ import main

    out = tmp_path / "why.png"
    args = ["explain", "vgg4_dilated", "--pretrained", "--index", "2", "--methods", "all", "--steps", "4"]
    assert main(args + ["--plot", str(out)]) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    report = capsys.readouterr().out
    assert all(m in report for m in METHODS)
    assert main(["explain", "vgg4_dilated", "--pretrained", "--pixel", "70", "5"]) == 2  # off the image
    assert "must lie in the 64x84 image" in capsys.readouterr().err
    assert main(["explain", "vgg4_dilated", "--checkpoint", "x.ckpt"]) == 2
    assert main(["explain", "vgg4_dilated", "--pretrained", "--method", "lrp"]) == 2


def test_concentration_command_prints_and_records_the_table(tmp_path, capsys):
    import json

    from helpers import load_tool

    main = load_tool("concentration").main

    out = tmp_path / "c.json"
    main(["vgg4_dilated", "--methods", "gradient", "guided", "--limit", "6", "--json", str(out)])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "| model | gradient | guided |"
    record = json.loads(out.read_text())
    shares = record["share_inside_glyph_box"]["vgg4_dilated"]
    assert set(shares) == {"gradient", "guided"} and all(0 < v <= 1 for v in shares.values())
    assert record["digits"] >= 12  # two or three glyphs per image
