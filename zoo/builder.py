"""`create_model` and `list_models`: the registry's models, with the shipped weights in view."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

import zoo.models  # noqa: F401  (registers every family)
from zoo.registry import build_model, model_entrypoint, model_names
from zoo.shipped import has_pretrained, load_pretrained, pretrained_card, split_tag


def list_models(pattern: str | Iterable[str] | None = None, pretrained: bool = False) -> list[str]:
    """Sorted registered names, optionally filtered by fnmatch-style wildcards.

    Args:
        pattern: one pattern ("vgg4_*") or several; a name is kept if any matches.
        pretrained: keep only models that ship pretrained weights.
    """
    names = model_names(pattern)
    return [n for n in names if has_pretrained(n)] if pretrained else names


def create_model(
    name: str, pretrained: bool = False, dtype: torch.dtype | None = None, **kwargs
) -> nn.Module:
    """Build a registered model by name, forwarding keyword arguments to its family.

    The model records `arch` and `model_kwargs`, so it can be saved and rebuilt.

    Args:
        name: a name from `list_models()`; with `pretrained`, optionally `name.tag`.
        pretrained: load the weights shipped with the package (see `list_models(pretrained=True)`);
            the model is built with the keyword arguments recorded in their model card.
        dtype: torch.bfloat16 for a bf16 model (weights, statistics and activations; on a CPU
            with bf16 instructions, faster inference: docs/benchmarks.md; `zoo.predict(...,
            dtype=torch.bfloat16)` gets the same speed with fp32 weights); None keeps fp32.
        **kwargs: family arguments (in_channels, num_classes, head, widths, dilations, ...).
    """
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be None, torch.float32 or torch.bfloat16, found {dtype}")
    if not pretrained:
        if isinstance(name, str) and "." in name:
            raise ValueError(f"{name!r}: a '.tag' names pretrained weights; pass pretrained=True")
        model = build_model(name, **kwargs)
    else:
        name, tag = split_tag(name)
        model_entrypoint(name)  # an unknown name says so before a missing weight does
        card = pretrained_card(f"{name}.{tag}")
        model = build_model(name, **{**card["model_kwargs"], **kwargs})
        load_pretrained(model, f"{name}.{tag}", card)
        model.card = card
    return model if dtype is None else model.to(dtype)
