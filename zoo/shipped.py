"""Shipped weights: safetensors files plus a JSON model card (`zoo.cards`) inside the package.

In the wheel they live in `zoo/pretrained/` (a data folder mapped from the repository's
`checkpoints/`); in a source checkout they are read from `checkpoints/` directly. A name may
carry a tag, `vgg4_dilated.m2nist`; without one the default tag is used. Loading checks the
file's sha256 against its card, and every key and shape against the model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from zoo.cards import ModelCard, read_card, sha256

DEFAULT_TAG = "m2nist"


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


def pretrained_card(name: str) -> ModelCard:
    """The model card of shipped weights `name` (or `name.tag`)."""
    arch, tag = split_tag(name)
    weights, card = weight_paths(arch, tag)
    if not weights.is_file() or not card.is_file():
        tags = available_tags(arch)
        hint = f"tags with weights: {', '.join(tags)}" if tags else "see zoo.list_models(pretrained=True)"
        raise FileNotFoundError(f"no pretrained weights tagged {tag!r} ship for {arch!r}; {hint}")
    return read_card(card)


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(state)` with an error that says what does not match and why."""
    own = model.state_dict()
    classes = getattr(model, "num_classes", None)
    for key in ("head.conv.weight", "head.fc.weight"):
        if key in state and key in own and state[key].shape[0] != own[key].shape[0]:
            raise ValueError(
                f"{source} predicts {state[key].shape[0]} classes but the model was built for {classes}; "
                f"build it with num_classes={state[key].shape[0]}"
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        arch = getattr(model, "arch", type(model).__name__)
        parts = [f"{source} does not match the architecture {arch}"]
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
                parts.append(f"{label}: {', '.join(items[:4])}{more}")
        raise ValueError("; ".join(parts))
    model.load_state_dict(state)


def load_safetensors_into(model: nn.Module, path: str | Path, card: ModelCard | None = None) -> None:
    """Load a safetensors file into `model`, first checking its sha256 against the card's."""
    path = Path(path)
    if card is not None:
        found = sha256(path)
        if found != card["sha256"]:
            raise ValueError(
                f"checksum mismatch for {path}: the model card records sha256 {card['sha256'][:16]}..., "
                f"the file has {found[:16]}...; the file is corrupted or not the one the card describes"
            )
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read {path}: not a valid safetensors file ({e})") from None
    load_state_checked(model, state, str(path))


def load_pretrained(model: nn.Module, name: str, card: ModelCard | None = None) -> None:
    """Load the shipped weights of `name` (or `name.tag`) into `model`, checking the checksum.

    Args:
        card: its model card, when the caller has read it already.
    """
    weights, _ = weight_paths(*split_tag(name))
    load_safetensors_into(model, weights, card or pretrained_card(name))
