"""Model registry: families register their variants by name; `build_model` makes one from keywords.

A leaf: it knows nothing of weights or cards. `zoo.builder.create_model` adds the shipped weights.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from collections.abc import Callable, Iterable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def model_names(pattern: str | Iterable[str] | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by fnmatch-style wildcards.

    Args:
        pattern: one pattern ("vgg4_*") or several; a name is kept if any matches.
    """
    names = sorted(_MODELS)
    if pattern is None:
        return names
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def is_model(name: str) -> bool:
    """True if `name` is a registered model."""
    return name in _MODELS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered constructor of `name`, or an error naming the closest registered names."""
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
    fn = model_entrypoint(name)
    # variants are thin wrappers `def name(**kwargs) -> Family`: the family's __init__ has the arguments
    family = typing.get_type_hints(fn).get("return")
    target = family.__init__ if inspect.isclass(family) else fn
    params = dict(inspect.signature(target).parameters)
    params.pop("self", None)
    return {k: p for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build_model(name: str, **kwargs) -> nn.Module:
    """The registered model `name` built from its family's keyword arguments, checked first.

    The model records `arch` and `model_kwargs`, so it can be saved and rebuilt.
    """
    fn = model_entrypoint(name)
    accepted = model_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"{name}: unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    model = fn(**kwargs)
    model.arch, model.model_kwargs = name, dict(kwargs)
    return model
