"""Pretrained weights shipped with the package."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def has_pretrained(name: str) -> bool:
    """True if weights for model `name` ship with the package."""
    return (WEIGHTS_DIR / f"{name}.safetensors").is_file()


def load_pretrained(model: nn.Module, name: str) -> None:
    """Load the shipped weights of `name` into `model`."""
    if not has_pretrained(name):
        raise FileNotFoundError(
            f"no pretrained weights ship for {name!r} (looked for {WEIGHTS_DIR / (name + '.safetensors')}); "
            "see zoo.list_models(pretrained=True)"
        )
    raise NotImplementedError("loading pretrained weights arrives with the checkpoint loader")
