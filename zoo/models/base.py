"""The common frame of every zoo model: features, a head, input checks."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from zoo.layers.heads import HEADS, make_head, pixel_head_from_classifier

# the defaults of `create_model`, as timm's are ImageNet's: M2NIST's one grayscale channel and
# ten digits plus background. The models know no data set; these are only defaults.
DEFAULT_IN_CHANNELS = 1
DEFAULT_NUM_CLASSES = 11
DEFAULT_CLASS_NAMES = tuple(str(d) for d in range(10)) + ("background",)


def check_positive_int(name: str, value: object) -> int:
    """Return `value` if it is an int >= 1, else raise a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, found {value!r}")
    return value


def per_layer(name: str, value: object, n: int) -> list:
    """Broadcast one value to `n` layers, or check that a sequence has `n` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must have one entry per layer ({n}), found {len(value)}: {value!r}")
        return list(value)
    return [value] * n


def positive_ints(name: str, values: Sequence[object]) -> list[int]:
    """Check every entry of `values` is a positive int."""
    return [check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(values)]


def layer_ints(name: str, value: object, n: int) -> list[int]:
    """One positive int per layer, from a single int or a sequence of `n`."""
    return positive_ints(name, per_layer(name, value, n))


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Parameters as `model.parameters()` counts them (weights, biases, BN gamma/beta).

    Args:
        nonzero: count only the entries that are not zero (what pruning leaves).
    """
    if nonzero:
        return int(sum(int((p != 0).sum()) for p in model.parameters()))
    return sum(p.numel() for p in model.parameters())


def check_widths(widths: object) -> list[int]:
    """A non-empty sequence of positive channel counts."""
    if not isinstance(widths, (list, tuple)) or not widths:
        raise ValueError(f"widths must be a non-empty sequence of ints, found {widths!r}")
    return positive_ints("widths", widths)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the block, then every submodule back in its own mode (also on errors)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


class ZooModel(nn.Module):
    """Backbone `features` followed by a `head`; subclasses build `features`.

    With `head="pixel"` the output is (N, num_classes, H, W) for an (N, in_channels, H, W) input.
    Models whose features are smaller than the input (`output_stride > 1`: the strided
    baselines) apply the 1x1 classifier at their low resolution and then upsample its logits
    bilinearly (align_corners=False) to exactly H x W. With `head="classify"` the output is
    (N, num_classes).
    """

    output_stride: int = 1

    def __init__(self, in_channels: int, num_classes: int, head: str) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.num_classes = check_positive_int("num_classes", num_classes)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, found {head!r}")
        self.head_type = head

    @property
    def full_resolution(self) -> bool:
        """True when every feature map keeps the input's height and width."""
        return self.output_stride == 1

    def _finish(self, feature_channels: int, pooled_channels: int | None = None) -> None:
        """Attach the head and initialise weights; call at the end of a subclass's __init__.

        Args:
            pooled_channels: the context head averages only the last this many feature channels.
        """
        self.feature_channels = feature_channels
        self.head = make_head(self.head_type, feature_channels, self.num_classes, pooled_channels)
        self.init_weights()
        # channels_last weights make every convolution run channels_last, whatever the input's
        # layout: oneDNN's fastest CPU path and the tensor-core layout on GPUs
        self.to(memory_format=torch.channels_last)

    def init_weights(self) -> None:
        """He-normal convolutions (fan out), zero biases, unit batch-norm scales."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless `x` is a float (N, in_channels, H, W) tensor."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, found {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"expected a 4-D input (N, {self.in_channels}, H, W), found shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channel(s), found {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"expected a floating-point input, found {x.dtype}; convert and normalise images first"
            )

    features_frozen: bool = False

    def freeze_features(self, frozen: bool = True) -> ZooModel:
        """Train only the head: the backbone's weights and batch-norm statistics stay as they are.

        The backbone keeps eval mode through `train()`, so its batch norms use (and keep) their
        running statistics; without gradients its forward takes the fused inference path.
        """
        self.features.requires_grad_(not frozen)
        self.features_frozen = frozen
        return self.train(self.training)

    def train(self, mode: bool = True) -> ZooModel:
        super().train(mode)
        if self.features_frozen:
            self.features.eval()
        return self

    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enable: bool = True) -> ZooModel:
        """Recompute each block of `features` in the backward pass instead of storing its activations.

        Full-resolution training memory grows with the pixel count; this trades about one extra
        forward pass for keeping only the blocks' inputs. (Batch-norm running statistics see each
        training batch twice while it is on.)
        """
        if enable and not isinstance(self.features, nn.Sequential):
            raise ValueError(f"{type(self).__name__} has no block sequence to checkpoint")
        self.grad_checkpointing = enable
        return self

    def run_blocks(self, blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`blocks(x)`, checkpointing each block when gradient checkpointing is on and training."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for block in blocks:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            return x
        return blocks(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map, before the head."""
        return self.run_blocks(self.features, x)

    def head_input(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """What `forward` hands the head: `forward_features(x)` here; subclasses may hand over
        the feature map as channel blocks that the head would otherwise take apart again."""
        return self.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        out = self.head(self.head_input(x))
        if out.dim() == 4 and out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if not torch.is_grad_enabled():
            out = out.contiguous()  # the fused inference path works channels_last inside
        return out


def classifier_to_segmenter(model: ZooModel) -> ZooModel:
    """A copy of a `head="classify"` model whose linear layer became a per-pixel 1x1 convolution.

    For full-resolution models the spatial mean of the new pixel logits equals the classifier's
    logits exactly (the head is linear and the pooling was a mean).
    """
    if not isinstance(model, ZooModel) or model.head_type != "classify":
        raise ValueError("expected a zoo model built with head='classify'")
    seg = copy.deepcopy(model)
    seg.head = pixel_head_from_classifier(model.head)
    seg.head_type = "pixel"
    return seg
