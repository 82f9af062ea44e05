"""Every registered model: shapes, full resolution, gradients, determinism, parameter counts."""

import copy

import pytest
import torch
import torch.nn as nn

import zoo
from zoo.layers import ConvBNAct

ALL = zoo.list_models()
SMALL = [n for n in ALL if not n.endswith("_wide")]
FULL_RES = [n for n in ALL if zoo.create_model(n).full_resolution]
STRIDED = [n for n in ALL if n not in FULL_RES]
ODD_SIZES = [(1, 1), (5, 7), (13, 17)]


def test_baselines_are_the_only_downsampling_models():
    assert set(STRIDED) == {
        "vgg4_strided",
        "vgg4_strided_wide",
        "vgg4_maxpool",
        "resnet18_strided",
        "unet_small",
        "unet",
    }


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", ODD_SIZES)
def test_forward_backward_any_size(name, size):
    model = zoo.create_model(name)
    x = torch.rand(2, 1, *size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 11, *size)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"


@pytest.mark.parametrize("name", ALL)
def test_classify_head_any_size(name):
    model = zoo.create_model(name, in_channels=3, num_classes=10, head="classify").eval()
    for size in [(1, 1), (32, 32), (11, 6)]:
        assert model(torch.rand(1, 3, *size)).shape == (1, 10)


def _leaf_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Size]]:
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.append((name, out.shape)))
        for name, m in model.named_modules()
        if not list(m.children())
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("name", FULL_RES)
@pytest.mark.parametrize("size", [(64, 84), (9, 11)])
def test_no_downsampling_anywhere(name, size):
    """Every feature map holds at least one sample per input pixel and image.

    Plain models keep H x W everywhere; inside a ShiftStitch the k*k offsets sit in the batch,
    so batch * h * w must still cover N * H * W (more, where odd sizes are padded).
    """
    model = zoo.create_model(name).eval()
    n = 2
    outputs = _leaf_outputs(model, torch.rand(n, 1, *size))
    assert outputs
    stitched = any(isinstance(m, zoo.layers.ShiftStitch) for m in model.modules())
    for layer, shape in outputs:
        if len(shape) != 4:
            continue
        if stitched:
            assert shape[0] * shape[2] * shape[3] >= n * size[0] * size[1], layer
        else:
            assert tuple(shape[-2:]) == size, f"{layer} is {tuple(shape)}, input {size}"


def test_hooks_do_see_downsampling():
    outputs = _leaf_outputs(zoo.create_model("vgg4_strided"), torch.rand(1, 1, 64, 84))
    assert (8, 11) in {tuple(s[-2:]) for _, s in outputs}


@pytest.mark.parametrize("name", [n for n in STRIDED if not n.startswith("unet")])
def test_strided_baselines_upsample_to_input_size(name):
    model = zoo.create_model(name).eval()
    assert model.output_stride == 8
    x = torch.rand(1, 1, 64, 84)
    assert model.forward_features(x).shape[-2:] == (8, 11)
    assert model(x).shape == (1, 11, 64, 84)


@pytest.mark.parametrize("name", ["unet_small", "unet"])
def test_unet_goes_down_twice_and_back(name):
    model = zoo.create_model(name).eval()
    sizes = {tuple(s[-2:]) for _, s in _leaf_outputs(model, torch.rand(1, 1, 64, 84))}
    assert {(64, 84), (32, 42), (16, 21)} <= sizes and model.output_stride == 4
    assert model.forward_features(torch.rand(1, 1, 61, 83)).shape[-2:] == (61, 83)  # padded, cropped
    # parameters by hand, widths 8-16-28 (every 3x3 conv has bias and BN: 9*cin*cout + 3*cout)
    if name == "unet_small":
        conv = lambda cin, cout: 9 * cin * cout + 3 * cout  # noqa: E731
        enc = conv(1, 8) + conv(8, 8) + conv(8, 16) + conv(16, 16) + conv(16, 28) + conv(28, 28)
        up = (28 * 16 + 16) + (16 * 8 + 8)  # 1x1 convs after bilinear upsampling
        dec = conv(32, 16) + conv(16, 16) + conv(16, 8) + conv(8, 8)
        assert sum(p.numel() for p in model.parameters()) == enc + up + dec + 8 * 11 + 11


@pytest.mark.parametrize("name", SMALL)
def test_deterministic_with_seed(name):
    x = torch.rand(2, 1, 16, 20)
    torch.manual_seed(123)
    a = zoo.create_model(name)
    torch.manual_seed(123)
    b = zoo.create_model(name)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    a.eval()
    b.eval()
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), a(x))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected",
    [
        # the seed's CIFAR-10 figures (shared/reference/FACTS.md)
        ("vgg4_dilated", 25_474),
        ("vgg4_large_kernel", 172_930),
        ("vgg4_strided", 25_474),
        ("cascade10", 86_404),
        ("vgg4_dilated_wide", 1_558_026),
        ("vgg4_large_kernel_wide", 12_437_002),
    ],
)
def test_seed_parameter_counts(name, expected):
    assert _count(zoo.create_model(name, in_channels=3, num_classes=10, head="classify")) == expected


def test_standard_resnet18_parameter_count():
    # the CIFAR ResNet18 (3x3 stem, no max pool, 64-128-256-512, 10 classes) has 11,173,962 parameters
    m = zoo.create_model(
        "resnet18_strided", widths=(64, 128, 256, 512), in_channels=3, num_classes=10, head="classify"
    )
    assert _count(m) == 11_173_962
    assert _count(m) == _count(
        zoo.create_model(
            "resnet18_dilated", widths=(64, 128, 256, 512), in_channels=3, num_classes=10, head="classify"
        )
    )


def _plain_stack_count(widths, kernels, depthwise, bn_layers, cin, classes, head):
    """Parameters of a conv stack from its layer table, by formula."""
    total = 0
    for i, (w, k, dw) in enumerate(zip(widths, kernels, depthwise)):
        total += (k * k * (1 if dw else cin)) * w + w  # weights + bias
        total += 2 * w if i < bn_layers else 0  # BN gamma, beta
        cin = w
    return total + (cin * classes + classes)  # 1x1 conv and linear head have the same count


@pytest.mark.parametrize("head", ["pixel", "classify"])
def test_plain_stack_counts_by_formula(head):
    four = [False] * 4
    assert _count(zoo.create_model("vgg4_dilated", head=head)) == _plain_stack_count(
        (16, 24, 32, 48), (3, 3, 3, 3), four, 4, 1, 11, head
    )
    assert _count(zoo.create_model("vgg4_large_kernel", head=head)) == _plain_stack_count(
        (16, 24, 32, 48), (3, 5, 7, 9), four, 4, 1, 11, head
    )
    assert _count(zoo.create_model("vgg7_dilated", head=head)) == _plain_stack_count(
        (16, 24, 32, 32, 48, 48, 48), (3,) * 7, [False] * 7, 7, 1, 11, head
    )
    dw_widths = (16, 16, 24, 24, 32, 32, 40, 40, 48, 48)
    assert _count(zoo.create_model("cascade10_depthwise", head=head)) == _plain_stack_count(
        dw_widths, (3,) * 10, (False, True) * 5, 9, 1, 11, head
    )


def test_context_head_count_by_formula():
    stack = _plain_stack_count((16, 24, 32, 32, 48, 48, 48), (3,) * 7, [False] * 7, 7, 1, 11, "pixel")
    pixel_head = 48 * 11 + 11
    # 1x1 mix of the 48 features and their window mean (96 -> 48, + bias, BN), then 48 -> 11 scores
    context_head = (96 * 48 + 48) + 2 * 48 + (48 * 11 + 11)
    assert _count(zoo.create_model("vgg7_dilated_context")) == stack - pixel_head + context_head
    assert _count(zoo.create_model("vgg7_dilated", head="context")) == stack - pixel_head + context_head


@pytest.mark.parametrize(
    "name, skipped", [("vgg7_dilated_skip_context", 24), ("vgg7_dilated_skip16_context", 16)]
)
def test_skip_context_count_by_formula(name, skipped):
    widths = (16, skipped, 32, 32, 32, 32, 32)
    stack = _plain_stack_count(widths, (3,) * 7, [False] * 7, 7, 1, 11, "pixel")
    pixel_head = 32 * 11 + 11
    # the mix reads layer 2's channels, the last 32 and their window mean (-> 32, bias, BN)
    mixed = skipped + 32 + 32
    context_head = (mixed * 32 + 32) + 2 * 32 + (32 * 11 + 11)
    m = zoo.create_model(name)
    assert _count(m) == stack - pixel_head + context_head
    assert m.feature_channels == skipped + 32


def test_skip_from_feeds_layer_outputs_to_the_head():
    # features = the skipped-from layer's output beside the last layer's, checked against the
    # layers run one by one
    m = zoo.create_model("vgg7_dilated_skip_context").eval()
    x = torch.rand(1, 1, 19, 23)
    layers = [*m.features[:2], *m.features[2].body]
    with torch.no_grad():
        h, outs = x, []
        for layer in layers:
            h = layer(h)
            outs.append(h)
        torch.testing.assert_close(m.forward_features(x), torch.cat([outs[1], outs[-1]], dim=1))


CONTEXT = [n for n in ALL if zoo.create_model(n).head_type == "context"]


@pytest.mark.parametrize("name", CONTEXT)
def test_context_models_match_the_head_written_out(name):
    # The head by its definition: the last pooled_channels feature channels averaged over
    # 29x29 windows (PyTorch's own average pooling, border windows over the pixels inside),
    # concatenated after all features, then the 1x1 mix and the classifier. Training mode (batch
    # statistics), so the gradients must agree too, whatever blocks the model hands its head.
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=3)
    head = model.head
    x = torch.rand(2, 1, 23, 37)
    out = model(x)
    out.square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    features = model.forward_features(x)
    deep = features[:, -head.pooled_channels :]
    window = torch.nn.functional.avg_pool2d(deep, 29, stride=1, padding=14, count_include_pad=False)
    expected = head.conv(head.mix(torch.cat([features, window], dim=1)))
    expected.square().mean().backward()
    torch.testing.assert_close(out, expected)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"skip_from": 3}, r"skip_from must be a layer index in \[0, 3\)"),
        ({"skip_from": -1}, "skip_from must be a layer index"),
        ({"skip_from": True}, "skip_from must be a layer index"),
        ({"skip_from": 1, "pool": "max"}, "skip_from needs full resolution"),
        ({"skip_from": 1, "strides": (1, 2, 2, 2)}, "skip_from needs full resolution"),
    ],
)
def test_skip_from_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.create_model("vgg4_dilated", **kwargs)


def test_cascade10_depthwise_documented_count():
    m = zoo.create_model("cascade10_depthwise", in_channels=3, num_classes=10, head="classify")
    assert _count(m) == 42_394


def test_cascade_last_layer_has_no_bn_or_relu():
    m = zoo.create_model("cascade10")
    convs = [mod for mod in m.modules() if isinstance(mod, ConvBNAct)]
    assert len(convs) == 10
    assert all(hasattr(c, "bn") and hasattr(c, "act") for c in convs[:9])
    assert not hasattr(convs[9], "bn") and not hasattr(convs[9], "act")


def test_dilations_and_kernels_as_documented():
    convs = [m for m in zoo.create_model("vgg4_dilated").modules() if isinstance(m, nn.Conv2d)]
    assert [c.dilation[0] for c in convs[:4]] == [1, 2, 4, 8]
    assert [c.padding[0] for c in convs[:4]] == [1, 2, 4, 8]
    convs = [m for m in zoo.create_model("vgg4_large_kernel").modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs[:4]] == [3, 5, 7, 9]
    convs = [m for m in zoo.create_model("resnet18_dilated").modules() if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (1, 1) for c in convs)
    assert {c.dilation[0] for c in convs if c.kernel_size == (3, 3)} == {1, 2, 4, 8}
    assert all(c.padding[0] == c.dilation[0] for c in convs if c.kernel_size == (3, 3))


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_get_clear_errors(name):
    model = zoo.create_model(name)
    with pytest.raises(ValueError, match=r"4-D input \(N, 1, H, W\).*\(1, 64, 84\)"):
        model(torch.rand(1, 64, 84))
    with pytest.raises(ValueError, match="expected 1 input channel.*found 3"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="floating-point.*uint8"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("name", FULL_RES)
def test_classifier_to_segmenter_mean_equals_logits(name):
    clf = zoo.create_model(name, in_channels=3, num_classes=10, head="classify").eval()
    seg = zoo.classifier_to_segmenter(clf).eval()
    x = torch.rand(2, 3, 12, 10)
    pixel = seg(x)
    assert pixel.shape == (2, 10, 12, 10)
    torch.testing.assert_close(pixel.mean(dim=(2, 3)), clf(x), rtol=1e-4, atol=1e-5)
    assert clf.head_type == "classify"  # the original is left alone


def test_classifier_to_segmenter_rejects_pixel_models():
    with pytest.raises(ValueError, match="classify"):
        zoo.classifier_to_segmenter(zoo.create_model("vgg4_dilated"))


@pytest.mark.parametrize("name", [n for n in zoo.list_models() if "wide" not in n])
def test_grad_checkpointing_same_loss_and_gradients(name):
    model = zoo.create_model(name)
    if not isinstance(model.features, nn.Sequential):
        with pytest.raises(ValueError, match="no block sequence"):
            model.set_grad_checkpointing()
        return
    x = torch.rand(2, 1, 24, 28)
    loss = model(x).square().mean()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    again = model.set_grad_checkpointing()(x).square().mean()
    again.backward()
    torch.testing.assert_close(again, loss)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ALL if "wide" not in n])
def test_fused_inference_path_matches_the_modules(name):
    # eval + no_grad on CPU takes ConvBNAct's fused oneDNN path (BN folded, ReLU fused);
    # with autograd on, the plain module sequence runs: both must agree
    model = zoo.create_model(name)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # statistics away from the identity
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.rand(2, 1, 37, 45)
    reference = model(x).detach()
    with torch.no_grad():
        fast = model(x)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


@pytest.mark.parametrize("name", ALL)
def test_channels_last_weights_and_layout_free_results(name):
    # create_model makes conv weights channels_last; an NCHW copy must compute the same thing
    torch.manual_seed(0)
    model = zoo.create_model(name).train()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x = torch.rand(2, 1, 20, 24)
    a, b = model(x), nchw(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    a.square().sum().backward()
    b.square().sum().backward()
    # fp32 sums in another order; biases before batch norm have zero true gradient (pure rounding),
    # so compare the whole gradient vector by its norm
    ga = torch.cat([p.grad.flatten() for p in model.parameters()])
    gb = torch.cat([p.grad.flatten() for p in nchw.parameters()])
    assert (ga - gb).norm() <= 1e-3 * gb.norm()
