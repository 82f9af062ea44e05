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
from safetensors.torch import save_file
from torch import nn

from zoo.builder import create_model
from zoo.cards import CARD_VERSION, PREPROCESSING, ModelCard, attach_card, read_card, sha256, write_card
from zoo.models.base import count_parameters
from zoo.shipped import DEFAULT_TAG, load_safetensors_into, load_state_checked

INIT_PARTS = ("all", "features")


def read_checkpoint(path: Path) -> object:
    """A `.ckpt`/`.pt` file's contents, read with `torch.load(weights_only=True)` only."""
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


def model_kwargs_of(hparams: dict) -> dict:
    """`create_model` keywords of a training run: its `model_kwargs` plus the class and channel
    counts the data gave (`num_classes`, `in_channels`, recorded beside them)."""
    kwargs = dict(hparams.get("model_kwargs") or {})
    for key in ("num_classes", "in_channels"):
        given = hparams.get(key)
        if given is None:
            continue
        if kwargs.get(key, given) != given:
            raise ValueError(f"model_kwargs say {key}={kwargs[key]}, but the data has {given}")
        kwargs[key] = given
    return kwargs


def _model_from_pickled(obj: object, path: Path, arch: str | None, model_kwargs: dict) -> nn.Module:
    """The model a `torch.load`-ed Lightning checkpoint or plain state dict describes, weights loaded."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a checkpoint dict or a state dict")
    if "state_dict" in obj and "hyper_parameters" in obj:
        hp = obj["hyper_parameters"]
        if "arch" not in hp:
            raise ValueError(f"{path} is a Lightning checkpoint without an 'arch' hyperparameter")
        if arch is not None and arch != hp["arch"]:
            raise ValueError(f"{path} holds a {hp['arch']}, not a {arch}")
        arch = hp["arch"]
        kwargs = {**model_kwargs_of(hp), **model_kwargs}
        state = _model_state(obj["state_dict"])
        data = {"preprocessing": hp.get("normalization"), "class_names": hp.get("class_names")}
    elif all(isinstance(v, torch.Tensor) for v in obj.values()):
        if arch is None:
            raise ValueError(f"{path} is a plain state dict: pass arch= (and the model's keyword arguments)")
        kwargs, state, data = model_kwargs, obj, {}
    else:
        raise ValueError(f"{path} is neither a Lightning checkpoint nor a state dict of tensors")
    model = create_model(arch, **kwargs)
    load_state_checked(model, state, str(path))
    for key, value in data.items():  # what zoo.predict needs to treat images as training did
        if value is not None:
            setattr(model, key, value)
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
        model = _model_from_pickled(read_checkpoint(path), path, arch, model_kwargs)
    if card is not None:
        attach_card(model, card)
    return model.to(map_location).eval()


def save_shipped(
    model: nn.Module, out_dir: str | Path, arch: str, model_kwargs: dict, card: dict, tag: str = DEFAULT_TAG
) -> tuple[Path, Path]:
    """Write `{arch}.{tag}.safetensors` and its JSON card (sha256 and parameter count filled in)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, card_path = out / f"{arch}.{tag}.safetensors", out / f"{arch}.{tag}.json"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, weights, metadata={"arch": arch, "tag": tag})
    full: ModelCard = {
        "card_version": CARD_VERSION,
        "arch": arch,
        "tag": tag,
        "model_kwargs": dict(model_kwargs),
        "parameters": count_parameters(model),
        "nonzero_parameters": count_parameters(model, nonzero=True),
        "preprocessing": PREPROCESSING,
        **card,
        "sha256": sha256(weights),
        "format": "safetensors",
    }
    return weights, write_card(card_path, full)


def export(
    ckpt_path: str | Path,
    out_dir: str | Path,
    tag: str = DEFAULT_TAG,
    results: str | Path | None = None,
    shared_recipe: str | Path | None = None,
) -> tuple[Path, Path]:
    """Turn a `train.py` checkpoint into the shipped form: safetensors + JSON model card.

    Args:
        results: the run's results.json (test metrics, data, command); default: beside the checkpoint.
        shared_recipe: for weights trained by a longer recipe, the results.json of the same model's
            run of the shared comparison recipe (`configs/<model>.yaml`): the card keeps its
            command, epochs, time and test scores as `training.shared_recipe`, which the model
            table compares models by.
    """
    ckpt_path = Path(ckpt_path)
    obj = read_checkpoint(ckpt_path)
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
    init_from = obj["hyper_parameters"].get("init_from")
    earlier = _earlier_stages(init_from)
    if earlier:
        card["training"]["earlier_stages"] = earlier
    start_card = Path(init_from).with_suffix(".json") if init_from else None
    if (
        shared_recipe is None
        and start_card is not None
        and str(init_from).endswith(".safetensors")
        and start_card.is_file()
    ):
        # a further stage of shipped weights keeps the shared recipe's record they carried
        inherited = read_card(start_card).get("training", {}).get("shared_recipe")
        if inherited is not None:
            card["training"]["shared_recipe"] = inherited
    if shared_recipe is not None:
        shared = json.loads(Path(shared_recipe).read_text())
        if shared.get("arch") != model.arch:
            raise ValueError(f"{shared_recipe} is a run of {shared.get('arch')}, not of {model.arch}")
        keep = ("command", "epochs", "fit_seconds", "precision", "test")
        card["training"]["shared_recipe"] = {
            **{k: shared.get(k) for k in keep},
            "note": (
                "the shared comparison recipe's run of this model; the model table's 'shared recipe' column"
            ),
        }
    hp = obj["hyper_parameters"]
    if hp.get("class_names") is not None:  # trained on one's own data: what an application needs to know
        channels = "grayscale" if model.in_channels == 1 else f"{model.in_channels}-channel (RGB)"
        norm = hp.get("normalization")
        card["classes"] = [str(n) for n in hp["class_names"]]
        card["ignore_index"] = card["data"].get("ignore_index")
        card["preprocessing"] = {
            "input": f"{channels} uint8 (H, W{'' if model.in_channels == 1 else ', C'}), 0..255, any size",
            "normalize": "x / 255" + (", then (x - mean) / std per channel" if norm else "; nothing else"),
            "scale": 255.0,
            **({"mean": norm["mean"], "std": norm["std"]} if norm else {}),
        }
    return save_shipped(model, out_dir, model.arch, model.model_kwargs, card, tag)


def init_weights_from(model: nn.Module, path: str | Path, parts: str = "all") -> None:
    """Load other weights into `model`: a second stage of a run, or a new head on trained features.

    Args:
        path: a `train.py` .ckpt or a shipped .safetensors (with its card beside it).
        parts: "all" (the whole model: same architecture, checked and named when it differs) or
            "features" (only the backbone, from a model of any head whose `features` match ours
            key for key and shape for shape).
    """
    if parts not in INIT_PARTS:
        raise ValueError(f"parts must be one of {INIT_PARTS}, found {parts!r}")
    if parts == "features":
        source = load(path)
        load_state_checked(model.features, source.features.state_dict(), f"{path} (features)")
    else:
        source = load(path, arch=model.arch, **model.model_kwargs)
        load_state_checked(model, source.state_dict(), str(path))


def upgrade_hyperparameters(ckpt: dict) -> dict | None:
    """A zoo 0.1 checkpoint's module arguments in today's form, or None for a current checkpoint.

    zoo 0.1 recorded `optimizer` ("adamw" or "sgd"), `lr`, `weight_decay` and `schedule`
    ("onecycle", "cosine", "none") as plain values; today the optimizer and schedule are
    LightningCLI class_path/init_args, the same recipe spelled as configs spell it.
    """
    hyper = ckpt.get("hyper_parameters") or {}
    if not isinstance(hyper.get("optimizer"), str):
        return None
    lr, decay = hyper.get("lr", 3e-3), hyper.get("weight_decay", 1e-4)
    if hyper["optimizer"] == "sgd":
        optimizer = {
            "class_path": "torch.optim.SGD",
            "init_args": {"lr": lr, "momentum": 0.9, "nesterov": True, "weight_decay": decay},
        }
    else:
        optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": lr, "weight_decay": decay}}
    schedule = hyper.get("schedule", "onecycle")
    if schedule == "onecycle":
        scheduler = {
            "class_path": "torch.optim.lr_scheduler.OneCycleLR",
            "init_args": {"max_lr": lr, "pct_start": 0.15},
        }
    elif schedule == "cosine":  # zoo 0.1 kept the cosine's length beside the hyperparameters
        length = ckpt.get("schedule_steps") or 1
        scheduler = {
            "class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "init_args": {"T_max": length},
        }
    else:
        scheduler = None
    dropped = ("lr", "weight_decay", "schedule")
    kept = {k: v for k, v in hyper.items() if k not in dropped and not k.startswith("_")}
    return {**kept, "optimizer": optimizer, "lr_scheduler": scheduler}


def test_split_name(ckpt: dict) -> str:
    """What a run's test split was, from its checkpoint's data hyperparameters."""
    data = ckpt.get("datamodule_hyper_parameters") or {}
    # runs from before layouts existed generated the scatter layout
    return f"test (generated M2NIST, {data.get('layout', 'scatter')} layout)"


def _earlier_stages(init_from: str | None) -> list[dict]:
    """The training behind a fit's starting weights (`init_from`), oldest stage first.

    A run's checkpoint: what its results.json recorded, after the stages behind that run's own
    `init_from`. Shipped weights: the stages on their card, so a model built on another's weights
    shows (and the model table sums) the whole cost.
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
        hyper = read_checkpoint(path).get("hyper_parameters", {}) if path.is_file() else {}
        before = _earlier_stages(hyper.get("init_from"))
    else:
        return [{"from": str(init_from)}]
    keep = ("command", "epochs", "fit_seconds")
    return [*before, {"from": str(init_from), **{k: record.get(k) for k in keep}, "test": test}]
