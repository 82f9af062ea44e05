"""Module paths that moved: the old path forwards to the new one for one release, with a warning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

REMOVED_IN = "0.4"


def forward_to(old: str, new: str) -> Callable[[str], object]:
    """A module-level `__getattr__` for `old` that warns and returns `new`'s attribute of that name."""

    def __getattr__(name: str) -> object:
        if name.startswith("__"):  # import machinery and introspection probe these: not a user's access
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; the old path is removed in fullres-zoo {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new), name)

    return __getattr__
