"""Stride-1 window means and the context head, against references written here."""

import numpy as np
import pytest
import torch

import zoo
from zoo.layers import BoxMean, ContextHead


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
def test_box_mean_equals_window_means(k, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(k))
    expected = _window_mean_loops(x.double().numpy(), k)
    np.testing.assert_allclose(BoxMean(k)(x).numpy(), expected, atol=2e-6)


def test_box_mean_keeps_layout_free_results_and_dtype():
    x = torch.randn(2, 5, 12, 13)
    box = BoxMean(9)
    cl = box(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, box(x))
    half = box(x.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), box(x), atol=0.05, rtol=0.02)


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


def test_context_head_sees_the_window_mean():
    # with the mix reading only the pooled half, a pixel's score depends on its window's mean alone
    head = ContextHead(2, 3, windows=(5,)).eval()
    with torch.no_grad():
        head.mix.conv.weight.zero_()
        head.mix.conv.weight[:2, 2:, 0, 0] = torch.eye(2)
        head.mix.conv.bias.zero_()
    x = torch.rand(1, 2, 9, 9)
    moved = x.clone()
    moved[:, :, 4, 4], moved[:, :, 4, 5] = x[:, :, 4, 5], x[:, :, 4, 4]  # swap inside every window at (4, 4)
    torch.testing.assert_close(head(moved)[:, :, 4, 4], head(x)[:, :, 4, 4])
    far = x.clone()
    far[:, :, 0, 0] += 10  # outside the 5x5 window at (4, 4)
    torch.testing.assert_close(head(far)[:, :, 4, 4], head(x)[:, :, 4, 4])


def test_context_head_needs_a_window():
    with pytest.raises(ValueError, match="at least one window"):
        ContextHead(4, 3, windows=())


def test_context_head_on_any_family():
    for name in ("vgg4_dilated", "cascade10", "resnet18_dilated"):
        m = zoo.create_model(name, head="context")
        assert m(torch.rand(1, 1, 17, 23)).shape == (1, 11, 17, 23)
