"""The model card: the JSON file beside every shipped safetensors file, its schema and its checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypedDict

CARD_VERSION = 1
IGNORE_INDEX = -100  # the label of void pixels (and crop padding): PyTorch's cross-entropy default
REQUIRED = ("arch", "model_kwargs", "sha256")  # what loading needs; the rest documents the weights
PREPROCESSING = {
    "input": "grayscale uint8 (H, W), 0..255, any size",
    "normalize": "x / 255 (zoo.preprocess.normalize); nothing else",
    "scale": 255.0,
}


class ModelCard(TypedDict, total=False):
    """What a card holds. `arch`, `model_kwargs` and `sha256` are required; the rest describe the weights."""

    card_version: int
    arch: str  # a registered model name
    tag: str  # the weights' tag: "m2nist", "scatter", ...
    model_kwargs: dict  # keyword arguments for zoo.create_model
    parameters: int
    nonzero_parameters: int
    preprocessing: dict  # what images the model takes; per-channel "mean" and "std" where training used them
    classes: list[str]  # class names, for weights trained on one's own data
    ignore_index: int | None  # the stored mask value left out of training and scoring
    metrics: dict | None  # test scores and the split they were measured on
    data: dict  # where the training data came from, and the data module's settings
    training: dict  # command, epochs, fit time, precision, hyperparameters, earlier stages
    exported: dict  # from which file, with which torch and python, when
    sha256: str  # of the safetensors file
    format: str


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_card(path: str | Path) -> ModelCard:
    """A model card, checked for the fields loading needs."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read model card {path}: {e}") from None
    if not isinstance(card, dict):
        raise ValueError(f"model card {path} holds a {type(card).__name__}, expected a JSON object")
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise ValueError(f"model card {path} lacks {', '.join(missing)}")
    return card


def attach_card(model, card: ModelCard) -> None:
    """Give a loaded model its card, and what `zoo.predict` reads from it: the normalisation its
    training data used (`model.preprocessing`, where it has per-channel statistics) and its class names."""
    model.card = card
    if (card.get("preprocessing") or {}).get("mean") is not None:
        model.preprocessing = card["preprocessing"]
    if card.get("classes"):
        model.class_names = card["classes"]


def write_card(path: str | Path, card: ModelCard) -> Path:
    """Write `card` as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
