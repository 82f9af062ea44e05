"""Effective receptive fields: the articles' claims, with expectations derived by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from zoo.rf import effective_receptive_field, radius_of_mass


def uniform_stack(kernels, dilations=None, bias=False):
    """Single-channel linear box filters: the gradient map is the weights convolved together."""
    layers = []
    for k, d in zip(kernels, dilations or [1] * len(kernels)):
        conv = nn.Conv2d(1, 1, k, padding=d * (k - 1) // 2, dilation=d, bias=bias)
        nn.init.constant_(conv.weight, 1 / k**2)  # each layer averages: the total gradient stays 1
        layers.append(conv)
    return nn.Sequential(*layers)


def test_radius_of_mass_by_hand():
    m = np.zeros((5, 5))
    m[2, 2], m[2, 3], m[0, 0] = 0.5, 0.3, 0.2  # distances 0, 1, sqrt(8)
    assert radius_of_mass(m, (2, 2), 0.5) == 0
    assert radius_of_mass(m, (2, 2), 0.8) == 1
    assert radius_of_mass(m, (2, 2), 0.95) == pytest.approx(math.sqrt(8))


def test_two_3x3_see_as_far_as_one_5x5_but_use_less_uniform_weights():
    two = effective_receptive_field(uniform_stack([3, 3]), weights="trained", samples=1)
    one = effective_receptive_field(uniform_stack([5]), weights="trained", samples=1)
    assert two.theoretical == one.theoretical == (5, 5)
    # by hand: the 5x5 map is flat (1/25 each); two boxes give outer([1,2,3,2,1]) / 81
    cy, cx = one.center
    tri = np.outer([1, 2, 3, 2, 1], [1, 2, 3, 2, 1]) / 81
    np.testing.assert_allclose(two.map[cy - 2 : cy + 3, cx - 2 : cx + 3], tri, atol=1e-12)
    np.testing.assert_allclose(one.map[cy - 2 : cy + 3, cx - 2 : cx + 3], np.full((5, 5), 1 / 25), atol=1e-12)
    assert two.map.sum() == pytest.approx(1.0)
    # 95%: the flat 5x5 needs its corners (radius sqrt 8); the triangle's corners hold 4/81 < 5%
    assert one.radius == pytest.approx(math.sqrt(8)) and one.ratio == pytest.approx(1.0)
    assert two.radius == pytest.approx(math.sqrt(5)) and two.ratio < 1
    # rms radius: flat 5x5, E[dy^2 + dx^2] = 2 * (4+1+0+1+4)/5 = 4; triangle, 2 * (2*(4*1 + 1*2))/9 = 24/9
    assert one.sigma == pytest.approx(2.0) and two.sigma == pytest.approx(math.sqrt(24 / 9))


def test_two_3x3_smaller_than_one_5x5_random_init():
    torch.manual_seed(0)
    two = effective_receptive_field(uniform_stack([3, 3]), weights="random", samples=4, inits=64)
    one = effective_receptive_field(uniform_stack([5]), weights="random", samples=4, inits=64)
    # expected |sum of n random-sign paths| grows like sqrt(n): offset (a, b) has n(a) n(b) paths,
    # n = 1, 2, 3, 2, 1, so per axis the map is ~ sqrt(n); the 5x5 has one path everywhere (flat)
    s = np.sqrt([1, 2, 3, 2, 1])
    per_axis = (s * np.array([4, 1, 0, 1, 4])).sum() / s.sum()
    assert two.sigma == pytest.approx(math.sqrt(2 * per_axis), rel=0.05)
    assert one.sigma == pytest.approx(2.0, rel=0.03)
    assert two.sigma < one.sigma and two.radius <= one.radius
    # the outer ring of the 5x5 window carries clearly less of the stacked map's gradient
    cy, cx = two.center

    def ring(m):
        win = m[cy - 2 : cy + 3, cx - 2 : cx + 3]
        return win.sum() - win[1:4, 1:4].sum()

    # outer ring of the 5x5 window: 16/25 of a flat map; 1 - (inner s / all s)^2 of the sqrt(n) one
    assert ring(one.map) == pytest.approx(16 / 25, abs=0.03)
    assert ring(two.map) == pytest.approx(1 - (s[1:4].sum() / s.sum()) ** 2, abs=0.03)


def test_effective_radius_grows_like_sqrt_n_theoretical_like_n():
    ns = [8, 16, 32, 64, 128]
    erfs = [effective_receptive_field(uniform_stack([3] * n), weights="trained", samples=1) for n in ns]
    radius = np.array([e.radius for e in erfs])
    side = np.array([e.theoretical[0] for e in erfs])
    assert list(side) == [2 * n + 1 for n in ns]
    slope_eff = np.polyfit(np.log(ns), np.log(radius), 1)[0]
    slope_theory = np.polyfit(np.log(ns), np.log(side), 1)[0]
    assert slope_eff == pytest.approx(0.5, abs=0.05)
    assert slope_theory == pytest.approx(1.0, abs=0.05)
    # central limit: per-axis variance of n uniform {-1, 0, 1} steps is 2n/3, and a 2-D
    # Gaussian holds 95% within sqrt(-2 ln 0.05) standard deviations
    expected = math.sqrt(-2 * math.log(0.05)) * math.sqrt(2 * ns[-1] / 3)
    assert radius[-1] == pytest.approx(expected, rel=0.05)


def test_gridding_of_a_gapped_dilated_stack():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
    )  # fmt: skip
    erf = effective_receptive_field(net, weights="random", samples=8, inits=4)
    assert erf.theoretical == (13, 13)
    cy, cx = erf.center
    window = erf.map[cy - 6 : cy + 7, cx - 6 : cx + 7]
    dy, dx = np.indices(window.shape) - 6
    reachable = (dy % 2 == 0) & (dx % 2 == 0)  # only even offsets: 2 * (-3..3) on each axis
    assert (window[~reachable] == 0).all(), "gradient at an input the stack cannot see"
    assert (window[reachable] > 0).all()
    found = np.argwhere(window == 0) - 6
    assert len(found) == 13 * 13 - 7 * 7 and ((found % 2).sum(1) > 0).all()
    assert erf.map.sum() == pytest.approx(window.sum())  # nothing outside the theoretical field


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_model_erf_inside_its_theoretical_field(name):
    model = zoo.create_model(name)
    erf = effective_receptive_field(model, samples=2, inits=1)
    assert erf.map.shape == (max(64, erf.theoretical[0] + 32), max(64, erf.theoretical[1] + 32))
    assert erf.map.sum() == pytest.approx(1.0) and (erf.map >= 0).all()
    # the gradient's support spans at most the theoretical field (max pooling shifts it off
    # centre, so compare extents); bilinear upsampling of a strided model's low-resolution
    # output reaches one low-resolution step further on each side
    rows, cols = np.nonzero(erf.map > 1e-12)
    slack = 0 if model.full_resolution else 2 * model.output_stride
    assert rows.max() - rows.min() + 1 <= erf.theoretical[0] + slack
    assert cols.max() - cols.min() + 1 <= erf.theoretical[1] + slack
    assert 0 < erf.ratio <= 1.0 + 2 * model.output_stride / erf.theoretical[0]
    assert erf.sigma < erf.radius
    assert model.training, "the caller's model mode is restored"


def test_deterministic_with_a_seed_and_real_images():
    model = zoo.create_model("vgg4_dilated")
    a = effective_receptive_field(model, samples=3, inits=2, seed=5)
    b = effective_receptive_field(model, samples=3, inits=2, seed=5)
    np.testing.assert_array_equal(a.map, b.map)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 84), dtype=np.uint8)
    c = effective_receptive_field(model, weights="trained", images=images, target=3)
    assert c.map.shape == (64, 84) and c.samples == 3
    with pytest.raises(ValueError, match="uint8"):
        effective_receptive_field(model, images=images.astype(np.float32))
    with pytest.raises(ValueError, match="weights must be"):
        effective_receptive_field(model, weights="imagenet")
