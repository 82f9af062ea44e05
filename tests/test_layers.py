"""Stride-1 window means and the context head, against references written here."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import zoo
from zoo.cpu import bf16_depthwise_build_stalls
from zoo.layers import BoxMean, ContextHead, SkipConcat


def _window_mean_loops(x: np.ndarray, k: int) -> np.ndarray:
    """The mean of the pixels of each k x k window that lie inside the image, by loops."""
    n, c, h, w = x.shape
    r = k // 2
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            out[:, :, i, j] = win.mean(axis=(2, 3))
    return out


@pytest.mark.parametrize("k", [1, 3, 5, 29])
@pytest.mark.parametrize("size", [(7, 9), (20, 25), (1, 1)])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_box_mean_equals_window_means(k, size, dtype, atol):
    # float64 stays float64 (explain's finite-difference checks need it): a tolerance fp32 sums miss
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(k), dtype=torch.float64).to(dtype)
    expected = _window_mean_loops(x.double().numpy(), k)
    out = BoxMean(k)(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), expected, atol=atol)


def test_box_mean_keeps_layout_free_results_and_dtype():
    x = torch.randn(2, 5, 12, 13)
    box = BoxMean(9)
    cl = box(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, box(x))
    half = box(x.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), box(x), atol=0.05, rtol=0.02)
    xb = x.bfloat16().requires_grad_()  # training in bf16: output and gradient stay bf16
    out = box(xb)
    out.backward(torch.ones_like(out))
    assert out.dtype == xb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), box(xb.detach().float()), atol=0.01, rtol=0.01)


class _ConvolutionDtypes(TorchDispatchMode):
    """Records the input dtype of every convolution run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_box_mean_sums_bf16_in_bf16(requires_grad):
    # bf16 input sums in bf16 tensors (oneDNN accumulates in fp32), in inference and training
    # alike: four bf16 roundings of the mean (row sums, window sums, reciprocal count, product)
    # (24 channels: with 2-16 a window of 29 sums in fp32, see the test below)
    x = torch.rand(2, 24, 31, 33, generator=torch.Generator().manual_seed(0)) * 3 + 1
    xb = x.bfloat16().requires_grad_(requires_grad)
    expected = _window_mean_loops(xb.detach().double().numpy(), 29)
    with _ConvolutionDtypes() as seen:
        out = BoxMean(29)(xb)
    assert seen.dtypes == [torch.bfloat16] * 2 and out.dtype == torch.bfloat16
    ulp = 2.0**-8  # the largest relative error of one rounding to bf16 (8 significant bits)
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=4 * ulp)
    if requires_grad:  # the gradient is the transposed window (see the test below), in bf16 too
        weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
        out.backward(weights)
        xd = xb.detach().double().requires_grad_()
        BoxMean(29)(xd).backward(weights.double())
        assert xb.grad.dtype == torch.bfloat16
        np.testing.assert_allclose(xb.grad.double().numpy(), xd.grad.numpy(), rtol=4 * ulp)


STALL_CHILD = """
import sys, torch
from zoo.layers import BoxMean
x = torch.rand(2, 16, 40, 40).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
out = BoxMean(29)(x)
out.sum().backward()
print(out.dtype, x.grad.dtype)
"""


def test_box_mean_avoids_the_bf16_kernels_onednn_stalls_on():
    # the boundary measured by tools/bf16_depthwise_stall.py: 2-16 channels, windows from 15
    assert [c for c in range(1, 40) if bf16_depthwise_build_stalls(c, 29)] == list(range(2, 17))
    assert not bf16_depthwise_build_stalls(16, 13) and bf16_depthwise_build_stalls(16, 15)
    with _ConvolutionDtypes() as seen:
        out = BoxMean(29)(torch.rand(1, 16, 9, 9).bfloat16())
    assert seen.dtypes == [torch.float32] * 2 and out.dtype == torch.bfloat16
    # a 16-channel context head trained in bf16 took minutes per new shape; in a child process,
    # so that a stall fails the test instead of hanging the suite (it takes a second or two)
    done = subprocess.run([sys.executable, "-c", STALL_CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["torch.bfloat16", "torch.bfloat16"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_box_mean_sums_other_floats_in_fp32(dtype):
    with _ConvolutionDtypes() as seen:
        out = BoxMean(5)(torch.rand(1, 2, 9, 9, dtype=dtype))
    assert seen.dtypes == [torch.float32] * 2 and out.dtype == dtype


def test_box_mean_gradient_is_the_transposed_window():
    # d(sum of outputs)/d(input pixel) = sum over the windows holding it of 1 / window count
    x = torch.zeros(1, 1, 6, 7, requires_grad=True)
    BoxMean(3)(x).sum().backward()
    expected = np.zeros((6, 7))
    for i in range(6):
        for j in range(7):
            rows, cols = range(max(0, i - 1), min(6, i + 2)), range(max(0, j - 1), min(7, j + 2))
            n = len(rows) * len(cols)
            for a in rows:
                for b in cols:
                    expected[a, b] += 1 / n
    np.testing.assert_allclose(x.grad[0, 0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("k", [0, 4, -3, 2.0])
def test_box_mean_rejects_even_or_bad_sizes(k):
    with pytest.raises(ValueError, match="positive odd int"):
        BoxMean(k)


def test_box_mean_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        BoxMean(3)(torch.zeros(3, 4, 5))


def test_context_head_is_the_window_mean_by_hand():
    # mix reads only the pooled half (identity), BN at fresh statistics divides by sqrt(1 + eps),
    # the classifier copies channel c to class c: class c at (y, x) is relu(mean of channel c over
    # the 5x5 window clipped to the image) / sqrt(1 + eps), summed by hand below
    torch.manual_seed(0)
    head = ContextHead(2, 3, windows=(5,)).eval()
    with torch.no_grad():
        head.mix.conv.weight.zero_()
        head.mix.conv.weight[:2, 2:, 0, 0] = torch.eye(2)
        head.mix.conv.bias.zero_()
        head.conv.weight.zero_()
        head.conv.weight[0, 0, 0, 0] = head.conv.weight[1, 1, 0, 0] = 1
        head.conv.bias.zero_()
    x = torch.rand(1, 2, 7, 9) - 0.3
    got = head(x)
    scale = (1 + head.mix.bn.eps) ** -0.5
    for c in range(2):
        for y, xx in [(3, 4), (0, 0), (6, 8), (2, 7)]:
            window = [
                float(x[0, c, i, j])
                for i in range(7)
                for j in range(9)
                if abs(i - y) <= 2 and abs(j - xx) <= 2
            ]
            expected = max(sum(window) / len(window), 0.0) * scale
            assert got[0, c, y, xx].item() == pytest.approx(expected, abs=1e-6), (c, y, xx)
    assert torch.equal(got[0, 2], torch.zeros(7, 9))


def test_context_head_needs_a_window():
    with pytest.raises(ValueError, match="at least one window"):
        ContextHead(4, 3, windows=())


def test_context_head_on_any_family():
    for name in ("vgg4_dilated", "cascade10", "resnet18_dilated"):
        m = zoo.create_model(name, head="context")
        assert m(torch.rand(1, 1, 17, 23)).shape == (1, 11, 17, 23)


def test_context_head_pools_only_the_last_channels():
    # 3 skip channels then 2 deep ones; the mix copies the deep channels' window means to its
    # outputs, the classifier copies them to classes: only the deep channels are averaged
    torch.manual_seed(0)
    head = ContextHead(5, 2, windows=(3,), pooled_channels=2).eval()
    assert head.mix.conv.in_channels == 5 + 2 and head.mix.conv.out_channels == 2
    with torch.no_grad():
        head.mix.conv.weight.zero_()
        head.mix.conv.weight[:, 5:, 0, 0] = torch.eye(2)
        head.mix.conv.bias.zero_()
        head.conv.weight.copy_(torch.eye(2)[:, :, None, None])
        head.conv.bias.zero_()
    x = torch.rand(1, 5, 6, 7)
    got = head(x)
    scale = (1 + head.mix.bn.eps) ** -0.5
    for c, deep in enumerate((3, 4)):
        for y, xx in [(0, 0), (2, 3), (5, 6)]:
            window = [
                float(x[0, deep, i, j])
                for i in range(6)
                for j in range(7)
                if abs(i - y) <= 1 and abs(j - xx) <= 1
            ]
            assert got[0, c, y, xx].item() == pytest.approx(sum(window) / len(window) * scale, abs=1e-6)


@pytest.mark.parametrize("pooled", [0, 6, -1])
def test_context_head_rejects_pooled_channels_out_of_range(pooled):
    with pytest.raises(ValueError, match=r"pooled_channels must be in \[1, 5\]"):
        ContextHead(5, 2, pooled_channels=pooled)


def test_skip_concat_puts_its_input_beside_its_body_output():
    body = torch.nn.Conv2d(2, 3, 1, bias=False)
    x = torch.rand(2, 2, 4, 5)
    out = SkipConcat(body)(x)
    assert out.shape == (2, 5, 4, 5)
    assert torch.equal(out[:, :2], x)
    w = body.weight[:, :, 0, 0]
    by_hand = torch.einsum("oc,nchw->nohw", w, x)
    torch.testing.assert_close(out[:, 2:], by_hand)
