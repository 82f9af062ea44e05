"""The Hugging Face Hub layout: `config.json` + `model.safetensors` + a README model card.

`save_pretrained(model, directory)` writes it (and with `push_to_hub=True`, uploads it);
`from_pretrained(directory_or_repo_id)` rebuilds the zoo model from it. Both go through
huggingface_hub's `ModelHubMixin` (the `hub` extra), so `push_to_hub`, revisions, caching and
tokens behave as they do for every Hub library. Loading is as strict as `zoo.load`: safetensors
only, every tensor present with the right shape, nothing unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file

from zoo.builder import create_model
from zoo.cards import attach_card
from zoo.models.base import DEFAULT_CLASS_NAMES
from zoo.shipped import load_state_checked

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CONFIG_VERSION = 1


class ZooHubModel(
    ModelHubMixin,
    library_name="fullres-zoo",
    tags=["image-segmentation", "fullres-zoo", "m2nist"],
    license="mit",
    pipeline_tag="image-segmentation",
):
    """A zoo model with its card, in the Hub layout (use `save_pretrained` / `from_pretrained` below)."""

    def __init__(self, model: nn.Module, card: dict | None = None) -> None:
        if not hasattr(model, "arch"):
            raise ValueError(
                f"expected a model from zoo.create_model or zoo.load (it records arch and model_kwargs), "
                f"found a {type(model).__name__} without them"
            )
        self.model, self.card = model, dict(card or getattr(model, "card", None) or {})

    def config(self) -> dict:
        keep = (
            "tag",
            "preprocessing",
            "classes",
            "ignore_index",
            "metrics",
            "data",
            "training",
            "parameters",
        )
        # a model loaded from a train.py checkpoint carries its data's normalisation and class names
        known = {
            "preprocessing": getattr(self.model, "preprocessing", None),
            "classes": getattr(self.model, "class_names", None),
        }
        return {
            "zoo_config_version": CONFIG_VERSION,
            "arch": self.model.arch,
            "model_kwargs": dict(self.model.model_kwargs),
            **{k: v for k, v in known.items() if v is not None},
            **{k: self.card[k] for k in keep if k in self.card},
        }

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, save_directory / WEIGHTS_NAME, metadata={"arch": self.model.arch, "format": "pt"})
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **unused,
    ) -> ZooHubModel:
        def fetch(name: str) -> Path:
            folder = Path(model_id)
            if folder.is_dir():
                if not (folder / name).is_file():
                    raise FileNotFoundError(
                        f"{folder} is not a fullres-zoo model directory: it has no {name}"
                    )
                return folder / name
            try:
                return Path(
                    hf_hub_download(
                        model_id,
                        name,
                        revision=revision,
                        cache_dir=cache_dir,
                        force_download=force_download,
                        local_files_only=local_files_only,
                        token=token,
                    )
                )
            except (LocalEntryNotFoundError, EntryNotFoundError, RepositoryNotFoundError) as e:
                raise FileNotFoundError(
                    f"{model_id!r} is neither a local directory nor a Hub repository with {name} "
                    f"reachable now ({type(e).__name__})"
                ) from None

        config = json.loads(fetch(CONFIG_NAME).read_text())
        missing = [k for k in ("arch", "model_kwargs") if k not in config]
        if missing:
            raise ValueError(f"{model_id}: {CONFIG_NAME} lacks {', '.join(missing)}: not a fullres-zoo model")
        model = create_model(config["arch"], **config["model_kwargs"])
        weights = fetch(WEIGHTS_NAME)
        load_state_checked(model, load_file(weights), str(weights))
        attach_card(model, config)
        return cls(model.eval(), card=config)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        data = ModelCardData(
            library_name="fullres-zoo", license="mit", tags=["image-segmentation", "fullres-zoo", "m2nist"]
        )
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{model_card_text(self.model.arch, self.config())}")


def model_card_text(arch: str, config: dict) -> str:
    """The README of a saved model: what it is, how to load it, its test scores and training."""
    lines = [
        f"# {arch}",
        "",
        "A [fullres-zoo](https://pypi.org/project/fullres-zoo/) segmentation network that never downsamples"
        " its feature maps (or a downsampling baseline of the zoo).",
        "",
        "```python",
        "import zoo",
        'model = zoo.from_pretrained("<this directory or repository id>")',
        "labels = zoo.predict(model, images)  # uint8 (N, H, W) in 0..255 -> int64 labels",
        "```",
        "",
        f"Built by `zoo.create_model({arch!r}, **{json.dumps(config['model_kwargs'])})`.",
    ]
    if "parameters" in config:
        lines.append(f"Parameters: {config['parameters']:,}.")
    metrics = config.get("metrics") or {}
    if metrics.get("iou"):
        lines += [
            "",
            f"## Test scores ({metrics.get('split', 'test split')})",
            "",
            (f"Digit mean IoU {metrics['digit_miou']:.4f}, " if "digit_miou" in metrics else "")
            + f"mean IoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_acc']:.4f}.",
            "",
            "| class | IoU |",
            "|---|---:|",
            *(
                f"| {name} | {iou:.4f} |"
                for name, iou in zip(config.get("classes") or DEFAULT_CLASS_NAMES, metrics["iou"])
            ),
        ]
    training = config.get("training") or {}
    if training.get("command"):
        lines += ["", "## Training", "", f"`{training['command']}` ({training.get('epochs')} epochs, "
                  f"{training.get('precision', '?')}, {training.get('fit_seconds', '?')} s)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def save_pretrained(
    model: nn.Module,
    save_directory: str | Path,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    **hub_kwargs,
) -> Path:
    """Write `model` in the Hub layout to `save_directory` (and upload it with `push_to_hub`).

    Args:
        model: built by `zoo.create_model` or `zoo.load` (shipped weights keep their card's metrics).
        repo_id, hub_kwargs: passed to `ModelHubMixin.push_to_hub` (token, private, ...).
    """
    ZooHubModel(model).save_pretrained(save_directory, push_to_hub=push_to_hub, repo_id=repo_id, **hub_kwargs)
    return Path(save_directory)


def from_pretrained(name_or_path: str | Path, **hub_kwargs) -> nn.Module:
    """The zoo model saved by `save_pretrained`: a local directory or a Hub repository id, in eval mode.

    Args:
        hub_kwargs: revision, cache_dir, token, local_files_only, force_download.
    """
    try:
        return ZooHubModel.from_pretrained(name_or_path, **hub_kwargs).model
    except (
        LocalEntryNotFoundError,
        EntryNotFoundError,
        RepositoryNotFoundError,
    ) as e:  # the mixin's config.json
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a local directory nor a Hub repository reachable now "
            f"({type(e).__name__})"
        ) from None
