"""Pretrained weights: safetensors files plus a JSON model card, shipped inside the package.

In the wheel they live in `zoo/pretrained/` (mapped from the repository's `checkpoints/`); in a
source checkout they are read from `checkpoints/` directly. A name may carry a tag,
`vgg4_dilated.m2nist`; without one the default tag is used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

DEFAULT_TAG = "m2nist"
CARD_VERSION = 1


def weights_dir() -> Path:
    """Where the shipped weights are: inside the installed package, else the source checkout."""
    installed = Path(__file__).resolve().parent / "pretrained"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "checkpoints"


def split_tag(name: str) -> tuple[str, str]:
    """'vgg4_dilated.m2nist' -> ('vgg4_dilated', 'm2nist'); no tag -> the default tag."""
    arch, _, tag = name.partition(".")
    return arch, tag or DEFAULT_TAG


def weight_paths(arch: str, tag: str = DEFAULT_TAG) -> tuple[Path, Path]:
    """(safetensors file, JSON card) of a shipped weight."""
    folder = weights_dir()
    return folder / f"{arch}.{tag}.safetensors", folder / f"{arch}.{tag}.json"


def available_tags(arch: str) -> list[str]:
    """Tags with shipped weights for `arch`."""
    return sorted(
        p.name[len(arch) + 1 : -len(".safetensors")] for p in weights_dir().glob(f"{arch}.*.safetensors")
    )


def has_pretrained(name: str) -> bool:
    """True if weights for model `name` (optionally `name.tag`) ship with the package."""
    return weight_paths(*split_tag(name))[0].is_file()


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_card(path: str | Path) -> dict:
    """A model card, checked for the fields loading needs."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read model card {path}: {e}") from None
    missing = [k for k in ("arch", "model_kwargs", "sha256") if k not in card]
    if missing:
        raise ValueError(f"model card {path} lacks {', '.join(missing)}")
    return card


def pretrained_card(name: str) -> dict:
    """The model card of shipped weights `name` (or `name.tag`)."""
    arch, tag = split_tag(name)
    weights, card = weight_paths(arch, tag)
    if not weights.is_file() or not card.is_file():
        tags = available_tags(arch)
        hint = f"tags with weights: {', '.join(tags)}" if tags else "see zoo.list_models(pretrained=True)"
        raise FileNotFoundError(f"no pretrained weights tagged {tag!r} ship for {arch!r}; {hint}")
    return read_card(card)


def load_pretrained(model: nn.Module, name: str, card: dict | None = None) -> None:
    """Load the shipped weights of `name` (or `name.tag`) into `model`, checking the checksum.

    Args:
        card: its model card, when the caller has read it already.
    """
    from zoo.checkpoint import load_safetensors_into

    weights, _ = weight_paths(*split_tag(name))
    load_safetensors_into(model, weights, card or pretrained_card(name))
