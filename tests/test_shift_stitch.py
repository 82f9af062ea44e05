"""ShiftStitch against a dense reference written here: stride-1 pooling + dilated convolutions."""

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import zoo
from zoo.layers import ShiftStitch, batch_to_space, space_to_batch


def ref_maxpool(x: torch.Tensor, k: int, dilation: int = 1) -> torch.Tensor:
    """Stride-1 k x k max pooling with taps `dilation` apart, -inf beyond the bottom/right edge."""
    h, w = x.shape[-2:]
    reach = (k - 1) * dilation
    padded = torch.full((*x.shape[:-2], h + reach, w + reach), float("-inf"), dtype=x.dtype)
    padded[..., :h, :w] = x
    taps = [
        padded[..., i * dilation : i * dilation + h, j * dilation : j * dilation + w]
        for i in range(k)
        for j in range(k)
    ]
    return torch.stack(taps).amax(dim=0)


def dense_equivalent(module: nn.Module, x: torch.Tensor, factor: int = 1) -> torch.Tensor:
    """Run `module` at full resolution, replacing each ShiftStitch by pooling + dilation."""
    if isinstance(module, ShiftStitch):
        k = module.kernel_size
        return dense_equivalent(module.body, ref_maxpool(x, k, factor), factor * k)
    if isinstance(module, nn.Conv2d):
        return F.conv2d(
            x,
            module.weight,
            module.bias,
            padding=module.padding[0] * factor,
            dilation=module.dilation[0] * factor,
            groups=module.groups,
        )
    children = list(module.children())
    if children:
        for child in children:
            x = dense_equivalent(child, x, factor)
        return x
    return module(x)  # pointwise: BN (eval), ReLU


def randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def body(c_in: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Conv2d(5, 6, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(6, 4, 5, padding=2),
    )


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_equals_dense_form_for_divisible_sizes(k):
    layer = randomise_bn(ShiftStitch(body(), kernel_size=k))
    x = torch.randn(2, 3, 5 * k, 7 * k)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense_equivalent(layer, x), rtol=1e-5, atol=1e-5)


def test_vgg4_stitch_equals_nested_dense_form():
    model = randomise_bn(zoo.create_model("vgg4_stitch"))
    x = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        expected = model.head(dense_equivalent(model.features, x))
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (7, 4), (10, 11)])
def test_odd_sizes_single_conv_body_matches_dense_everywhere(k, size):
    """With one convolution inside, the zero padding of the pooled map is exactly the dense padding."""
    layer = randomise_bn(ShiftStitch(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)), k))
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        out = layer(x)
        assert out.shape == (2, 3, *size)
        torch.testing.assert_close(out, dense_equivalent(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [2, 3])
def test_odd_sizes_deep_body_matches_away_from_bottom_right(k):
    layer = randomise_bn(ShiftStitch(body(), k))
    h, w = 6 * k + 1, 5 * k + k - 1
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        out, ref = layer(x), dense_equivalent(layer, x)
    assert out.shape[-2:] == (h, w)
    # the body's receptive field reaches 1 + 2 + 4 + 4 = 11 pooled rows, i.e. 11 * k input rows
    margin = 11 * k
    torch.testing.assert_close(out[..., : h - margin, : w - margin], ref[..., : h - margin, : w - margin])


@pytest.mark.parametrize("k", [2, 3])
def test_space_to_batch_layout(k):
    n, c, h, w = 2, 3, 2 * k, 3 * k
    x = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)
    y = space_to_batch(x, k)
    assert y.shape == (n * k * k, c, h // k, w // k)
    for ni, ci, hi, wi, dy, dx in itertools.product(
        range(n), range(c), range(h // k), range(w // k), range(k), range(k)
    ):
        assert y[(ni * k + dy) * k + dx, ci, hi, wi] == x[ni, ci, hi * k + dy, wi * k + dx]
    assert torch.equal(batch_to_space(y, k), x)


def test_space_to_batch_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="divisible by 2.*5x4"):
        space_to_batch(torch.zeros(1, 1, 5, 4), 2)
    with pytest.raises(ValueError, match="batch divisible by 4"):
        batch_to_space(torch.zeros(3, 1, 2, 2), 2)


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_bad_kernel_size(bad):
    with pytest.raises(ValueError, match="kernel_size"):
        ShiftStitch(nn.Identity(), bad)


@pytest.mark.parametrize("k", [2, 3])
def test_gradients_equal_dense_form(k):
    layer = randomise_bn(ShiftStitch(body(), k))
    x = torch.randn(2, 3, 4 * k, 3 * k)
    weight = torch.randn(2, 4, 4 * k, 3 * k)
    xa = x.clone().requires_grad_()
    (layer(xa) * weight).sum().backward()
    grads_a = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    xb = x.clone().requires_grad_()
    (dense_equivalent(layer, xb) * weight).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    for ga, p in zip(grads_a, layer.parameters()):
        torch.testing.assert_close(ga, p.grad, rtol=1e-4, atol=1e-4)


def test_space_to_batch_keeps_channels_last():
    # the layout-preserving path (channels_last input, also a cropped view of one) must give the
    # same values as the NCHW path and hand the body channels_last tensors
    from zoo.layers.shift_stitch import batch_to_space, space_to_batch

    x = torch.randn(2, 5, 7, 9)
    cl = x.contiguous(memory_format=torch.channels_last)
    for a, b in [(x[:, :, 1:, 1:], cl[:, :, 1:, 1:]), (x[:, :, :6, :8], cl[:, :, :6, :8])]:  # both 6x8
        sa, sb = space_to_batch(a, 2), space_to_batch(b, 2)
        assert torch.equal(sa, sb) and sb.is_contiguous(memory_format=torch.channels_last)
        back = batch_to_space(sb, 2)
        assert torch.equal(back, a) and back.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_pooling_equals_reference_exactly(k, dtype, channels_last):
    # without autograd the pooling takes running maxima over shifted views: the same values
    # bit for bit as the stacked-taps reference, in either layout and precision, odd sizes too
    x = torch.randn(3, 4, 5 * k + 1, 4 * k - 1).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layer = ShiftStitch(nn.Identity(), k)
    with torch.no_grad():
        assert torch.equal(layer(x), ref_maxpool(x, k))
    with torch.inference_mode():
        assert torch.equal(layer(x), ref_maxpool(x, k))


@pytest.mark.parametrize("k", [2, 3])
def test_training_pooling_routes_each_window_gradient_to_one_switch(k):
    # ties (a constant map: every tap is a maximum) are where running maxima and max pooling
    # differ under autograd: max pooling gives each window's whole gradient to one tap, so the
    # input gradient holds whole counts summing to the number of windows
    x = torch.zeros(1, 1, 2 * k, 2 * k, requires_grad=True)
    ShiftStitch(nn.Identity(), k)(x).sum().backward()
    assert torch.equal(x.grad, x.grad.round()) and x.grad.sum().item() == x.numel()
