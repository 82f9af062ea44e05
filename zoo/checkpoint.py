"""Loading and exporting weights safely: Lightning checkpoints, shipped safetensors, state dicts.

Nothing here unpickles arbitrary objects: `.ckpt`/`.pt` files are read with
`torch.load(weights_only=True)`, shipped weights are safetensors.
"""

from __future__ import annotations

import json
import pickle
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from zoo.hub import CARD_VERSION, DEFAULT_TAG, read_card, sha256
from zoo.registry import create_model

PREPROCESSING = {
    "input": "grayscale uint8 (H, W), 0..255, any size",
    "normalize": "x / 255 (zoo.preprocess.normalize); nothing else",
    "scale": 255.0,
}


def _read_pickled(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0]
        raise ValueError(
            f"{path} holds Python objects besides tensors and plain values, so it was not loaded "
            f"(only weights_only=True loading is allowed): {reason}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read {path}: the file is truncated or corrupted ({reason})") from None


def _model_state(state: dict) -> dict[str, torch.Tensor]:
    """Strip Lightning's `model.` (and torch.compile's `_orig_mod.`) prefixes; drop non-model keys."""
    out = {}
    for key, value in state.items():
        if not key.startswith("model."):
            continue
        key = key[len("model.") :]
        key = key.removeprefix("_orig_mod.")
        out[key] = value
    return out


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


def load_safetensors_into(model: nn.Module, path: str | Path, card: dict | None = None) -> None:
    """Load a safetensors file into `model`, first checking its sha256 against the card's."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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


def _model_from_pickled(obj: object, path: Path, arch: str | None, model_kwargs: dict) -> nn.Module:
    """The model a `torch.load`-ed Lightning checkpoint or plain state dict describes, weights loaded."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a checkpoint dict or a state dict")
    if "state_dict" in obj and "hyper_parameters" in obj:
        hp = obj["hyper_parameters"]
        if "arch" not in hp:
            raise ValueError(f"{path} is a Lightning checkpoint without an 'arch' hyperparameter")
        from zoo.data.m2nist import NUM_CLASSES

        if arch is not None and arch != hp["arch"]:
            raise ValueError(f"{path} holds a {hp['arch']}, not a {arch}")
        arch = hp["arch"]
        kwargs = {"num_classes": NUM_CLASSES, **(hp.get("model_kwargs") or {}), **model_kwargs}
        state = _model_state(obj["state_dict"])
    elif all(isinstance(v, torch.Tensor) for v in obj.values()):
        if arch is None:
            raise ValueError(f"{path} is a plain state dict: pass arch= (and the model's keyword arguments)")
        kwargs, state = model_kwargs, obj
    else:
        raise ValueError(f"{path} is neither a Lightning checkpoint nor a state dict of tensors")
    model = create_model(arch, **kwargs)
    load_state_checked(model, state, str(path))
    return model


def load(
    path: str | Path, map_location: str | torch.device = "cpu", arch: str | None = None, **model_kwargs
) -> nn.Module:
    """A model in eval mode from a checkpoint file.

    Reads a Lightning `.ckpt` written by `train.py` (architecture from its hyperparameters), a
    shipped `.safetensors` with its JSON card beside it, or a plain state dict (`.pt`/`.pth`/
    `.safetensors`) with `arch=` (and the model's keyword arguments) given.

    Args:
        map_location: device for the returned model.
        arch: a registered model name; required when the file does not say.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    card = None
    if path.suffix == ".safetensors":
        card_path = path.with_suffix(".json")
        card = read_card(card_path) if card_path.is_file() else None
        if card is None and arch is None:
            raise ValueError(f"{path} has no model card ({card_path.name}) beside it: pass arch=")
        if card is not None and arch is not None and arch != card["arch"]:
            raise ValueError(f"{path} holds a {card['arch']} (per {card_path.name}), not a {arch}")
        arch = arch or card["arch"]
        kwargs = {**(card["model_kwargs"] if card else {}), **model_kwargs}
        model = create_model(arch, **kwargs)
        load_safetensors_into(model, path, card)
    else:
        model = _model_from_pickled(_read_pickled(path), path, arch, model_kwargs)
    if card is not None:
        model.card = card
    return model.to(map_location).eval()


def save_shipped(
    model: nn.Module, out_dir: str | Path, arch: str, model_kwargs: dict, card: dict, tag: str = DEFAULT_TAG
) -> tuple[Path, Path]:
    """Write `{arch}.{tag}.safetensors` and its JSON card (sha256 and parameter count filled in)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, card_path = out / f"{arch}.{tag}.safetensors", out / f"{arch}.{tag}.json"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, weights, metadata={"arch": arch, "tag": tag})
    full = {
        "card_version": CARD_VERSION,
        "arch": arch,
        "tag": tag,
        "model_kwargs": dict(model_kwargs),
        "parameters": sum(p.numel() for p in model.parameters()),
        "nonzero_parameters": int(sum((p != 0).sum() for p in model.parameters())),
        "preprocessing": PREPROCESSING,
        **card,
        "sha256": sha256(weights),
        "format": "safetensors",
    }
    card_path.write_text(json.dumps(full, indent=2) + "\n")
    return weights, card_path


def export(
    ckpt_path: str | Path, out_dir: str | Path, tag: str = DEFAULT_TAG, results: str | Path | None = None
) -> tuple[Path, Path]:
    """Turn a `train.py` checkpoint into the shipped form: safetensors + JSON model card.

    Args:
        results: the run's results.json (test metrics, data, command); default: beside the checkpoint.
    """
    ckpt_path = Path(ckpt_path)
    obj = _read_pickled(ckpt_path)
    model = _model_from_pickled(obj, ckpt_path, None, {}).eval()
    results = Path(results) if results else ckpt_path.parent / "results.json"
    run = json.loads(results.read_text()) if results.is_file() else {}

    def plain(d: dict | None) -> dict:
        return {k: v for k, v in (d or {}).items() if not k.startswith("_")}  # Lightning's own bookkeeping

    card = {
        "metrics": {"split": test_split_name(obj), **run["test"]} if "test" in run else None,
        "data": {"source": run.get("data"), **plain(obj.get("datamodule_hyper_parameters"))},
        "training": {
            "command": run.get("command"),
            "epochs": run.get("epochs", obj.get("epoch", -1) + 1),
            "best_epoch": obj.get("epoch"),
            "fit_seconds": run.get("fit_seconds"),
            "precision": run.get("precision"),
            "hyperparameters": plain(obj["hyper_parameters"]),
            "pytorch_lightning": obj.get("pytorch-lightning_version"),
        },
        "exported": {
            "from": ckpt_path.name,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        },
    }
    earlier = _earlier_stages(obj["hyper_parameters"].get("init_from"))
    if earlier:
        card["training"]["earlier_stages"] = earlier
    return save_shipped(model, out_dir, model.arch, model.model_kwargs, card, tag)


def test_split_name(ckpt: dict) -> str:
    """What a run's test split was, from its checkpoint's data hyperparameters."""
    data = ckpt.get("datamodule_hyper_parameters") or {}
    # runs from before layouts existed generated the scatter layout
    return f"test (generated M2NIST, {data.get('layout', 'scatter')} layout)"


def _earlier_stages(init_from: str | None) -> list[dict]:
    """The training behind a fit's starting weights (`init_from`), oldest stage first.

    A run's checkpoint: what its results.json recorded, after the stages behind that run's own
    `init_from`. Shipped weights: the stages on their card, so a model built on another's weights
    shows (and the README table sums) the whole cost.
    """
    if not init_from:
        return []
    path = Path(init_from)
    card_path, results = path.with_suffix(".json"), path.parent / "results.json"
    if path.suffix == ".safetensors" and card_path.is_file():
        card = read_card(card_path)
        record = card.get("training", {})
        before = record.get("earlier_stages", [])
        test = {k: v for k, v in card.get("metrics", {}).items() if k != "split"}
    elif results.is_file():
        record = json.loads(results.read_text())
        test = record.get("test")
        # a run that itself started from other weights: follow its own init_from
        hyper = _read_pickled(path).get("hyper_parameters", {}) if path.is_file() else {}
        before = _earlier_stages(hyper.get("init_from"))
    else:
        return [{"from": str(init_from)}]
    keep = ("command", "epochs", "fit_seconds")
    return [*before, {"from": str(init_from), **{k: record.get(k) for k in keep}, "test": test}]
