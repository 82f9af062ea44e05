"""The effective receptive field (Luo et al., NeurIPS 2016), measured with gradients.

The field a unit actually uses: |d out[center] / d input|, averaged over inputs (and, for
random weights, over initialisations). It is roughly Gaussian, so it is much smaller than the
theoretical field, and for n stacked layers its radius grows like sqrt(n), not n.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from zoo.builder import create_model
from zoo.models.base import eval_mode
from zoo.preprocess import as_batch
from zoo.progress import progress_bar
from zoo.rf.theory import receptive_field


@dataclass(frozen=True)
class EffectiveReceptiveField:
    """A measured effective receptive field.

    Attributes:
        map: (H, W) float64 mean |gradient| on the input, normalised to sum 1.
        center: (row, column) of the output unit, also its position on the input.
        radius: smallest distance from `center` (Euclidean, pixels) holding `mass` of the map.
        mass: the fraction used for `radius` (0.95).
        sigma: root-mean-square distance from `center` under the map (a smooth size measure).
        theoretical: theoretical receptive field (height, width) of the same model.
        ratio: `radius` over the same radius for a field that used every position of the
            theoretical field equally: 1 means the whole field counts, small means a few centre pixels.
        weights: "random" or "trained"; samples and inits: how many inputs and initialisations.
    """

    map: np.ndarray
    center: tuple[int, int]
    radius: float
    mass: float
    sigma: float
    theoretical: tuple[int, int]
    ratio: float
    weights: str
    samples: int
    inits: int

    def __str__(self) -> str:
        t = self.theoretical
        side = str(t[0]) if t[0] == t[1] else f"{t[0]}x{t[1]}"
        return (
            f"effective receptive field ({self.weights} weights, {self.samples} inputs"
            + (f" x {self.inits} initialisations" if self.weights == "random" else "")
            + f"): {self.mass:.0%} of the gradient within radius {self.radius:.1f} px, rms radius "
            f"{self.sigma:.1f}; theoretical field {side}; ratio {self.ratio:.2f} (1 = the whole field "
            "used evenly)"
        )


def radius_of_mass(grad_map: np.ndarray, center: tuple[int, int], mass: float = 0.95) -> float:
    """Smallest Euclidean distance from `center` within which `mass` of `grad_map` lies."""
    rows, cols = np.indices(grad_map.shape)
    dist = np.hypot(rows - center[0], cols - center[1]).ravel()
    order = np.argsort(dist, kind="stable")
    cumulative = np.cumsum(grad_map.ravel()[order])
    if cumulative[-1] <= 0:
        raise ValueError("the gradient map is zero everywhere: the output does not depend on the input")
    k = int(np.searchsorted(cumulative, mass * cumulative[-1] * (1 - 1e-12)))
    return float(dist[order][min(k, len(order) - 1)])


def uniform_radius(theoretical: tuple[int, int], mass: float = 0.95) -> float:
    """`radius_of_mass` of a map spread evenly over a theoretical field of that size."""
    flat = np.ones(theoretical)
    return radius_of_mass(flat, (theoretical[0] // 2, theoretical[1] // 2), mass)


def _reinitialise(model: nn.Module) -> None:
    if hasattr(model, "init_weights"):
        model.init_weights()
        return
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def effective_receptive_field(
    model: nn.Module | str,
    input_size: int | tuple[int, int] | None = None,
    samples: int = 16,
    weights: str = "random",
    images: np.ndarray | torch.Tensor | None = None,
    target: int | None = None,
    inits: int = 4,
    mass: float = 0.95,
    seed: int = 0,
    progress: bool | None = None,
) -> EffectiveReceptiveField:
    """Mean |gradient| of the central output pixel with respect to the input, and its radius.

    Args:
        model: a module mapping (N, C, H, W) to per-pixel logits (N, K, H', W'), or a zoo name.
        input_size: (H, W) of the random inputs; default: theoretical field + 16 on each side
            (at least 64), so the field is not clipped by the border.
        samples: inputs per initialisation (random uniform [0, 1) unless `images` is given).
        weights: "random": a copy of the model re-initialised `inits` times (its own init rule);
            "trained": the model's weights as they are (for a name: the shipped pretrained ones).
        images: real inputs instead of random ones: uint8 (N, H, W) in 0..255 or float (N, C, H, W).
        target: one class whose logit is differentiated; None sums over all classes.
        mass: the fraction of the gradient the reported radius holds.
        seed: seeds the inputs and the initialisations; the result is deterministic.
        progress: a bar over the initialisations; None: only on a terminal.
    """
    if weights not in ("random", "trained"):
        raise ValueError(f"weights must be 'random' or 'trained', found {weights!r}")
    if isinstance(model, str):
        model = create_model(model, pretrained=weights == "trained")
    if samples < 1 or inits < 1:
        raise ValueError(f"samples and inits must be >= 1, found {samples} and {inits}")
    theory = receptive_field(model).rf
    in_channels = getattr(model, "in_channels", None) or next(
        m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)
    )
    generator = torch.Generator().manual_seed(seed)
    if images is not None:
        x_all, _ = as_batch(images, in_channels)
        size = tuple(x_all.shape[-2:])
    else:
        if input_size is None:
            size = (max(64, theory[0] + 32), max(64, theory[1] + 32))
        else:
            size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        x_all = None
    center = (size[0] // 2, size[1] // 2)
    device = next(model.parameters()).device
    net = copy.deepcopy(model).eval() if weights == "random" else model
    total = torch.zeros(size, dtype=torch.float64)
    runs = inits if weights == "random" else 1
    with eval_mode(model):
        for run in progress_bar(range(runs), desc="effective field", show=progress):
            if weights == "random":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed * 1000 + run)
                    _reinitialise(net)
            if x_all is None:
                x = torch.rand((samples, in_channels, *size), generator=generator)
            else:
                x = x_all
            x = x.to(device).requires_grad_(True)
            out = net(x)
            if out.dim() != 4 or tuple(out.shape[-2:]) != size:
                raise ValueError(f"expected per-pixel logits of size {size}, found shape {tuple(out.shape)}")
            unit = out[:, :, center[0], center[1]] if target is None else out[:, target, center[0], center[1]]
            (grad,) = torch.autograd.grad(unit.sum(), x)
            total += grad.abs().sum(dim=(0, 1)).double().cpu()
    grad_map = (total / total.sum()).numpy() if total.sum() > 0 else total.numpy()
    radius = radius_of_mass(grad_map, center, mass)
    rows, cols = np.indices(grad_map.shape)
    sigma = float(np.sqrt((grad_map * ((rows - center[0]) ** 2 + (cols - center[1]) ** 2)).sum()))
    return EffectiveReceptiveField(
        map=grad_map,
        center=center,
        radius=radius,
        mass=mass,
        sigma=sigma,
        theoretical=theory,
        ratio=radius / max(uniform_radius(theory, mass), 1e-12),
        weights=weights,
        samples=len(x_all) if x_all is not None else samples,
        inits=runs,
    )
