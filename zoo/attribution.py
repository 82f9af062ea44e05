"""Why pixels got their label: gradients, deconvnet, guided backpropagation, integrated gradients.

`explain` attributes one class's score to the input pixels. For a segmentation model the score
is that class's logit summed over a set of pixels (a mask, one pixel, or by default the pixels
the model labels with the class); for a classifier it is the class logit. The methods:

- "gradient": the score's gradient (Simonyan et al., 2014; their saliency map is its absolute
  value, maximised over channels).
- "deconvnet": Zeiler and Fergus's rule: each ReLU passes back the positive part of the
  incoming gradient, whatever its forward input was.
- "guided": guided backpropagation (Springenberg et al., "Striving for Simplicity"): each ReLU
  passes gradient only where its forward input was positive *and* the incoming gradient is.
- "integrated_gradients": Sundararajan et al.'s path integral from a baseline (default: the
  black image, M2NIST's background); its attributions add up to score(image) - score(baseline).

The rules come from captum (the `explain` extra): `Saliency`, `Deconvolution`, `GuidedBackprop`
and `IntegratedGradients`. captum's ReLU rules act on `nn.ReLU` modules only, so before it runs,
`explain` walks one forward pass and refuses a model whose nonlinearity lives elsewhere (another
activation, or a functional relu), naming the layer. Nothing here touches a model that is not
being explained.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from zoo.models.base import eval_mode
from zoo.preprocess import as_batch

METHODS = ("gradient", "deconvnet", "guided", "integrated_gradients")
RELU_RULES = ("deconvnet", "guided")  # methods that replace the ReLU's backward pass

# elementwise nonlinearities that the deconvnet and guided rules have no rule for
OTHER_ACTIVATIONS = (
    nn.CELU, nn.ELU, nn.GELU, nn.GLU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardswish, nn.Hardtanh,
    nn.LeakyReLU, nn.LogSigmoid, nn.Mish, nn.PReLU, nn.RReLU, nn.ReLU6, nn.SELU, nn.SiLU,
    nn.Sigmoid, nn.Softplus, nn.Softshrink, nn.Softsign, nn.Tanh, nn.Tanhshrink, nn.Threshold,
)  # fmt: skip
_RELU_CALLS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_OTHER_CALLS = {
    F.gelu, F.silu, F.mish, F.elu, F.selu, F.celu, F.leaky_relu, F.relu6, F.hardswish, F.hardtanh,
    F.softplus, torch.sigmoid, torch.tanh, torch.Tensor.sigmoid, torch.Tensor.tanh, F.prelu,
}  # fmt: skip


class ExplainedScore(nn.Module):
    """One scalar per image: class `target`'s logit, summed over pixels with `weights` for a segmenter."""

    def __init__(self, model: nn.Module, target: int) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.model(x)
        if weights is None:
            return logits[:, self.target]
        return (logits[:, self.target] * weights.to(logits.dtype)).sum(dim=(1, 2))


def explain(
    model: nn.Module,
    image,
    target: int,
    mask=None,
    pixel: tuple[int, int] | None = None,
    method: str = "guided",
    baseline: torch.Tensor | float = 0.0,
    steps: int = 32,
) -> torch.Tensor:
    """Attribution of class `target`'s score to each input value, shaped like `image`.

    Args:
        model: any module mapping (N, C, H, W) to per-pixel logits (N, K, H, W) or to class
            logits (N, K); explained in eval mode and handed back exactly as it came.
        image: a float tensor as the model takes it ((N, C, H, W); one-channel models also
            (N, H, W) or (H, W)), or raw uint8 numpy images as `zoo.predict` takes them (then
            attributions are per unit of the normalised input x / 255).
        target: the class index whose score is explained.
        mask: boolean (H, W) or (N, H, W): the pixels whose `target` logits are summed.
        pixel: (y, x): explain that single pixel's `target` logit instead.
            With neither, the score sums over the pixels the model predicts as `target`.
        method: one of `METHODS` (see the module docstring).
        baseline, steps: integrated gradients only: the reference input and the number of
            Gauss-Legendre points of the path integral.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, found {method!r}")
    if mask is not None and pixel is not None:
        raise ValueError("give mask or pixel, not both")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, found {steps!r}")
    attr = _captum()
    given = tuple(image.shape)
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.is_floating_point():
        x = image  # (N, C, H, W) as the model takes it, whatever C: the model checks its own input
    else:
        x, _ = as_batch(image, getattr(model, "in_channels", 1))
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
    x = x.detach().clone().requires_grad_(True)  # ours, so captum has nothing to set or undo
    with eval_mode(model), torch.enable_grad():
        logits = _checked_forward(model, x, method)
        weights = _pixel_weights(logits, target, mask, pixel)
        score = ExplainedScore(model, target)
        args = None if weights is None else (weights,)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            if method == "gradient":
                out = attr.Saliency(score).attribute(x, abs=False, additional_forward_args=args)
            elif method == "deconvnet":
                out = attr.Deconvolution(score).attribute(x, additional_forward_args=args)
            elif method == "guided":
                out = attr.GuidedBackprop(score).attribute(x, additional_forward_args=args)
            else:
                out = attr.IntegratedGradients(score).attribute(
                    x,
                    baselines=baseline,
                    n_steps=steps,
                    additional_forward_args=args,
                    internal_batch_size=len(x) * max(1, 64 // len(x)),
                )
    return out.detach().reshape(given)


def concentration(attribution: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of absolute attribution inside each image's box; NaN where the attribution is all zero.

    Args:
        attribution: (N, C, H, W) or (N, H, W).
        boxes: (N, 4) integer rows (top, left, bottom, right), bottom and right exclusive.
    """
    a = attribution.abs().float()
    a = a.sum(1) if a.dim() == 4 else a
    if a.dim() != 3 or boxes.shape != (len(a), 4):
        raise ValueError(
            f"expected attributions (N, [C,] H, W) and boxes (N, 4), found {tuple(attribution.shape)} "
            f"and {tuple(boxes.shape)}"
        )
    rows = torch.arange(a.shape[1], device=a.device)[None, :, None]
    cols = torch.arange(a.shape[2], device=a.device)[None, None, :]
    top, left, bottom, right = (boxes[:, i, None, None].to(a.device) for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    total = a.sum(dim=(1, 2))
    return (a * inside).sum(dim=(1, 2)) / torch.where(total > 0, total, torch.nan)


def _captum():
    try:
        import captum.attr
    except ImportError as e:
        raise ImportError(
            "zoo.explain needs captum: pip install 'fullres-zoo[explain]' (or pip install captum)"
        ) from e
    return captum.attr


def _checked_forward(model: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    """The logits of `x` with gradients on; checks that `method` can explain every layer of `model`."""
    names = {id(m): name or type(model).__name__ for name, m in model.named_modules()}
    if method in RELU_RULES:
        for name, m in model.named_modules():
            if isinstance(m, OTHER_ACTIVATIONS):
                raise ValueError(
                    f"method={method!r} cannot explain layer {name!r} ({type(m).__name__}): its rule is "
                    "defined for ReLU only; use method='gradient' or 'integrated_gradients'"
                )
    probe = x.detach().clone().requires_grad_(True)
    with _functional_activations(model) as found:
        logits = model(probe)
    if method in RELU_RULES and found:
        layer, func = found[0]
        where = f"layer {names.get(id(layer), type(layer).__name__)!r} ({type(layer).__name__})"
        raise ValueError(
            f"method={method!r} cannot explain {where}: it calls {getattr(func, '__name__', func)} as a "
            "function, and the rule replaces the backward pass of nn.ReLU modules only; build it from "
            "nn.ReLU modules, or use method='gradient' or 'integrated_gradients'"
        )
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (2, 4):
        found_shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"expected the model to return logits (N, K, H, W) or (N, K), found {found_shape}")
    if logits.dim() == 4 and logits.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"expected per-pixel logits at the input's size {tuple(x.shape[-2:])}, found "
            f"{tuple(logits.shape)}"
        )
    if not logits.requires_grad:
        raise ValueError("the model's output does not depend differentiably on its input: nothing to explain")
    return logits.detach()


class _ActivationCalls(TorchFunctionMode):
    """Records nonlinear function calls made outside an nn.ReLU module's own forward."""

    def __init__(self, stack: list[nn.Module]) -> None:
        super().__init__()
        self.stack = stack
        self.found: list[tuple[nn.Module | None, object]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        inside_relu = bool(self.stack) and isinstance(self.stack[-1], nn.ReLU)
        if (func in _RELU_CALLS and not inside_relu) or func in _OTHER_CALLS:
            self.found.append((self.stack[-1] if self.stack else None, func))
        return func(*args, **(kwargs or {}))


@contextmanager
def _functional_activations(model: nn.Module) -> Iterator[list]:
    """Within the block, collect (innermost module, function) for every nonlinearity not in an nn.ReLU."""
    stack: list[nn.Module] = []
    own = {id(m) for m in model.modules()}

    def enter(module, args):
        if id(module) in own:
            stack.append(module)

    def leave(module, args, out):
        if id(module) in own and stack and stack[-1] is module:
            stack.pop()

    pre = torch.nn.modules.module.register_module_forward_pre_hook(enter)
    post = torch.nn.modules.module.register_module_forward_hook(leave)
    mode = _ActivationCalls(stack)
    try:
        with mode:
            yield mode.found
    finally:
        pre.remove()
        post.remove()


def _pixel_weights(
    logits: torch.Tensor, target: int, mask, pixel: Sequence[int] | None
) -> torch.Tensor | None:
    """Per-image pixel weights (N, H, W) of the explained sum; None for class logits."""
    n, k = logits.shape[:2]
    if not isinstance(target, (int, np.integer)) or isinstance(target, bool) or not 0 <= target < k:
        raise ValueError(f"target must be a class index in 0..{k - 1}, found {target!r}")
    if logits.dim() == 2:
        if mask is not None or pixel is not None:
            raise ValueError(
                "the model returns class logits (N, K): mask and pixel apply to per-pixel logits only"
            )
        return None
    h, w = logits.shape[-2:]
    if pixel is not None:
        if len(pixel) != 2 or not all(isinstance(v, (int, np.integer)) for v in pixel):
            raise ValueError(f"pixel must be (y, x) ints, found {pixel!r}")
        y, x = (int(v) for v in pixel)
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"pixel (y, x) must lie in the {h}x{w} image, found ({y}, {x})")
        weights = torch.zeros(n, h, w, device=logits.device)
        weights[:, y, x] = 1
        return weights
    if mask is None:
        chosen = logits.argmax(1) == target
        what = f"the model predicts no pixel as class {target}"
    else:
        chosen = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if chosen.dtype != torch.bool:
            raise ValueError(f"mask must be boolean, found {chosen.dtype}")
        if chosen.shape not in ((h, w), (n, h, w)):
            raise ValueError(f"mask must be ({h}, {w}) or ({n}, {h}, {w}), found {tuple(chosen.shape)}")
        chosen = chosen.to(logits.device).expand(n, h, w)
        what = "the mask selects no pixel"
    empty = (~chosen.flatten(1).any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{what} in image(s) {empty}: pass mask= or pixel= to say what to explain")
    return chosen.float()
