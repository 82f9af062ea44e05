"""Model registry: families register their variants, users create them by name."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from typing import Callable, Iterable

import torch
import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DEFAULTS: dict[str, dict] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str | Iterable[str] | None = None, pretrained: bool = False) -> list[str]:
    """Sorted registered names, optionally filtered by fnmatch-style wildcards.

    Args:
        pattern: one pattern ("vgg4_*") or several; a name is kept if any matches.
        pretrained: keep only models that ship pretrained weights.
    """
    names = sorted(_MODELS)
    if pattern is not None:
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if pretrained:
        from zoo.hub import has_pretrained

        names = [n for n in names if has_pretrained(n)]
    return names


def is_model(name: str) -> bool:
    """True if `name` is a registered model."""
    return name in _MODELS


def _check_name(name: str) -> Callable[..., nn.Module]:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, found {type(name).__name__}")
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=5, cutoff=0.4)
        hint = f"closest registered names: {', '.join(close)}" if close else "see zoo.list_models()"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def model_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments a registered model accepts, with their defaults."""
    fn = _check_name(name)
    # variants are thin wrappers `def name(**kwargs) -> Family`: the family's __init__ has the arguments
    family = typing.get_type_hints(fn).get("return")
    target = family.__init__ if inspect.isclass(family) else fn
    params = dict(inspect.signature(target).parameters)
    params.pop("self", None)
    return {k: p for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def create_model(name: str, pretrained: bool = False, dtype: torch.dtype | None = None, **kwargs) -> nn.Module:
    """Build a registered model by name, forwarding keyword arguments to its family.

    The model records `arch` and `model_kwargs`, so it can be saved and rebuilt.

    Args:
        name: a name from `list_models()`; with `pretrained`, optionally `name.tag`.
        pretrained: load the weights shipped with the package (see `list_models(pretrained=True)`);
            the model is built with the keyword arguments recorded in their model card.
        dtype: torch.bfloat16 for a bf16 model (weights, statistics and activations; on a CPU
            with bf16 instructions 1.2-2.2x faster inference in benchmarks/run.py; `zoo.predict(...,
            dtype=torch.bfloat16)` gets the same speed with fp32 weights); None keeps fp32.
        **kwargs: family arguments (in_channels, num_classes, head, widths, dilations, ...).
    """
    card = None
    if pretrained:
        from zoo.hub import pretrained_card, split_tag

        name, tag = split_tag(name)
        _check_name(name)
        card = pretrained_card(f"{name}.{tag}")
        kwargs = {**card["model_kwargs"], **kwargs}
    elif isinstance(name, str) and "." in name:
        raise ValueError(f"{name!r}: a '.tag' names pretrained weights; pass pretrained=True")
    fn = _check_name(name)
    accepted = model_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"{name}: unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be None, torch.float32 or torch.bfloat16, found {dtype}")
    model = fn(**kwargs)
    model.arch, model.model_kwargs = name, dict(kwargs)
    if pretrained:
        from zoo.hub import load_pretrained

        load_pretrained(model, f"{name}.{tag}", card)
        model.card = card
    return model if dtype is None else model.to(dtype)
