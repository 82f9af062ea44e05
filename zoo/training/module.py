"""The Lightning module: the training, validation and test steps of any registered model.

The pieces it calls are plain PyTorch: `zoo.create_model`, `zoo.training.losses.segmentation_loss`,
`zoo.training.metrics.SegmentationMetrics`, `zoo.checkpoint.init_weights_from` and the model's own
`freeze_features`. Optimizer and schedule are injected (`OptimizerCallable`,
`LRSchedulerCallable`), so LightningCLI configures any `torch.optim` class:
`--model.optimizer AdamW --model.optimizer.lr 0.02 --model.lr_scheduler OneCycleLR ...`.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable, instantiate_module
from torch.optim.lr_scheduler import OneCycleLR

from zoo.builder import create_model
from zoo.checkpoint import (
    INIT_PARTS,
    init_weights_from,
    model_kwargs_of,
    read_checkpoint,
    upgrade_hyperparameters,
)
from zoo.data.m2nist import BACKGROUND, CLASS_NAMES, NUM_CLASSES
from zoo.training.losses import median_frequency_from_counts, segmentation_loss
from zoo.training.metrics import SegmentationMetrics, format_table

FREEZE = (None, "features")
NONFINITE_CHECKPOINT = "before_nonfinite.ckpt"  # the weights a non-finite loss stopped at


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


# the defaults as LightningCLI spells them, so `--model.optimizer.lr 0.01` edits the default
DEFAULT_OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-3, "weight_decay": 1e-4}}
DEFAULT_SCHEDULER = {"class_path": "zoo.training.module.OneCycle"}


def adamw(params) -> torch.optim.Optimizer:
    """The default optimizer: `DEFAULT_OPTIMIZER`, AdamW with lr 3e-3 and weight decay 1e-4."""
    return torch.optim.AdamW(params, **DEFAULT_OPTIMIZER["init_args"])


class OneCycle(OneCycleLR):
    """The default schedule: `OneCycleLR` peaking at the optimizer's own lr after a 15% warm-up.

    `total_steps` left unset runs it over the whole fit (`build_scheduler` fills it in).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int | None = None, pct_start: float = 0.15
    ) -> None:
        peaks = [group["lr"] for group in optimizer.param_groups]
        super().__init__(optimizer, max_lr=peaks, total_steps=total_steps, pct_start=pct_start)


def build_scheduler(factory, optimizer: torch.optim.Optimizer, planned_steps: int):
    """Call a scheduler factory; a one-cycle schedule whose length is left unset gets the run's.

    `OneCycleLR` needs its length up front, which only the trainer knows: when the factory (the
    class, or LightningCLI's partial of it) sets neither `total_steps` nor `epochs`, it is
    called with `total_steps=planned_steps`.
    """
    if isinstance(factory, functools.partial):
        # functools.partial(OneCycleLR, ...), or LightningCLI's partial(instantiate, ..., OneCycleLR, ...)
        cls = next((f for f in (factory.func, *factory.args) if inspect.isclass(f)), None)
        given = factory.keywords
    else:
        cls, given = (factory if inspect.isclass(factory) else None), {}
    unset = given.get("total_steps") is None and given.get("epochs") is None
    if cls is not None and issubclass(cls, OneCycleLR) and unset:
        return factory(optimizer, total_steps=planned_steps)
    return factory(optimizer)


class SegmentationModule(pl.LightningModule):
    """Train, validate and test a registered zoo model on per-pixel labels.

    Args:
        arch: a name from `zoo.list_models()`.
        model_kwargs: keyword arguments for `zoo.create_model`.
        num_classes, in_channels, class_names, background, normalization: what the data is; train.py
            links them from the data module (`zoo.training.datamodules.SegmentationData`), so they are
            recorded with the weights. None: the model's defaults (M2NIST's 11 classes, 1 channel).
        loss: "ce" (cross-entropy) or "ce+dice".
        class_weights: None, "median_frequency" (from the training labels) or one float per class.
        optimizer: builds the optimizer from the trainable parameters (any `torch.optim` class
            on the command line); default AdamW, lr 3e-3, weight decay 1e-4.
        lr_scheduler: builds a per-step schedule from the optimizer, or None; a `OneCycleLR`
            without `total_steps` runs over the whole fit (`build_scheduler`).
        channels_last: keep the model's channels_last weights (as `zoo.create_model` makes them;
            measured faster on CPU and GPU); False converts them to NCHW.
        compile: wrap the model in `torch.compile`.
        init_from: the weights to start from (`zoo.checkpoint.init_weights_from`), e.g. a
            second, lower-rate stage, or the weights `validate`/`test`/`predict` score; loaded
            once, before anything else runs, and ignored when `--ckpt_path` gives a checkpoint.
        init_parts: "all" or "features" (see `init_weights_from`).
        freeze: "features" trains only the head (`ZooModel.freeze_features`).
    """

    def __init__(
        self,
        arch: str = "vgg4_dilated",
        model_kwargs: dict | None = None,
        loss: str = "ce",
        class_weights: str | list[float] | None = None,
        optimizer: OptimizerCallable = adamw,
        lr_scheduler: LRSchedulerCallable | None = OneCycle,
        channels_last: bool | None = True,
        compile: bool = False,
        init_from: str | None = None,
        init_parts: str = "all",
        freeze: str | None = None,
        num_classes: int | None = None,
        in_channels: int | None = None,
        class_names: list[str] | None = None,
        background: int | None = None,
        normalization: dict | None = None,
    ) -> None:
        super().__init__()
        if init_parts not in INIT_PARTS:
            raise ValueError(f"init_parts must be one of {INIT_PARTS}, found {init_parts!r}")
        if freeze not in FREEZE:
            raise ValueError(f"freeze must be one of {FREEZE}, found {freeze!r}")
        if loss not in ("ce", "ce+dice"):
            raise ValueError(f"loss must be 'ce' or 'ce+dice', found {loss!r}")
        if not (isinstance(class_weights, (list, tuple)) or class_weights in (None, "median_frequency")):
            raise ValueError(
                f"class_weights must be None, 'median_frequency' or a list, found {class_weights!r}"
            )
        self.save_hyperparameters()
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.model = create_model(arch, **model_kwargs_of(self.hparams))
        self.num_classes = self.model.num_classes
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        no_data = num_classes is None and background is None and self.num_classes == NUM_CLASSES
        if no_data:  # no data linked: the model's M2NIST defaults, digit score included
            background, class_names = BACKGROUND, class_names or list(CLASS_NAMES)
        self.class_names = list(class_names or range(self.num_classes))
        if freeze == "features":
            self.model.freeze_features()
        weights = None
        if isinstance(class_weights, (list, tuple)):
            if len(class_weights) != self.num_classes:
                raise ValueError(f"class_weights needs {self.num_classes} values, found {len(class_weights)}")
            weights = torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weight", weights, persistent=False)
        self.val_metrics = SegmentationMetrics(self.num_classes, background)
        self.test_metrics = SegmentationMetrics(self.num_classes, background)
        self.test_scores: dict | None = None
        self.initialised_from: str | None = None  # init_from, once loaded

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, weights_only: bool = True, **kwargs):
        """Lightning's loader, with weights_only=True always; zoo 0.1's checkpoints (string options) load too.

        Those recorded `optimizer="adamw"`, `lr`, `weight_decay` and `schedule`; they are
        rebuilt as today's arguments (`zoo.checkpoint.upgrade_hyperparameters`).
        """
        if not weights_only:
            raise ValueError("checkpoints load with weights_only=True only: unpickling code is never allowed")
        ckpt = read_checkpoint(Path(checkpoint_path))
        legacy = upgrade_hyperparameters(ckpt)
        if legacy is None:
            return super().load_from_checkpoint(checkpoint_path, map_location, weights_only=True, **kwargs)
        module = instantiate_module(cls, {**legacy, **kwargs})
        module.load_state_dict(ckpt["state_dict"])
        return module.to(map_location) if map_location is not None else module

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # factories given as Python callables are code, not data, and a checkpoint must load
        # with weights_only=True; LightningCLI records them as plain class_path/init_args instead
        hp = checkpoint.get("hyper_parameters", {})
        checkpoint["hyper_parameters"] = {k: v for k, v in hp.items() if not callable(v)}

    def on_train_start(self) -> None:
        # a resumed one-cycle keeps the length it was built with and cannot run longer; say so
        # instead of failing at the step past its end
        sched = self.lr_schedulers()
        planned = int(self.trainer.estimated_stepping_batches)
        if isinstance(sched, OneCycleLR) and sched.total_steps < planned:
            raise ValueError(
                f"this checkpoint's one-cycle schedule ends after {sched.total_steps} steps, but the "
                f"run now plans {planned}: resume with the trainer settings it started with, or "
                "start a new fit from its weights with --model.init_from"
            )

    def setup(self, stage: str) -> None:
        # at the first stage only: the test after a fit must keep the trained weights
        if self.hparams.init_from and self.trainer.ckpt_path is None and self.initialised_from is None:
            init_weights_from(self.model, self.hparams.init_from, self.hparams.init_parts)
            self.initialised_from = self.hparams.init_from
        if self.hparams.class_weights == "median_frequency" and self.class_weight is None:
            counts = torch.as_tensor(self.trainer.datamodule.class_pixel_counts())
            self.class_weight = median_frequency_from_counts(counts).to(self.device)
        if self.hparams.channels_last is False:
            self.model.to(memory_format=torch.contiguous_format)
        if self.hparams.compile:
            self.model = torch.compile(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        loss = segmentation_loss(self(images), masks, self.hparams.loss, self.class_weight)
        if not torch.isfinite(loss):
            raise self._stop(loss.item())
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def _stop(self, loss: float) -> NonFiniteLossError:
        """Record where training broke in `stopped.json`, keep the weights if still finite, and say so."""
        root = Path(self.trainer.default_root_dir)
        where = {"epoch": self.current_epoch, "step": self.global_step}
        state = self.model.state_dict().values()  # BN statistics too: the bad forward updated them
        finite = all(bool(torch.isfinite(t).all()) for t in state if t.is_floating_point())
        # the optimizer has not stepped on this loss: the weights are those before the bad step
        # (batch-norm statistics have seen its batch)
        kept = root / NONFINITE_CHECKPOINT if finite and self.trainer.world_size == 1 else None
        if kept is not None:
            self.trainer.save_checkpoint(kept)
        callback = self.trainer.checkpoint_callback
        last = (callback.last_model_path or None) if callback is not None else None
        record = {
            "reason": f"training loss is {loss}",
            **where,
            "weights": str(kept) if kept else None,
            "last": last,
        }
        if self.trainer.is_global_zero:
            root.mkdir(parents=True, exist_ok=True)
            (root / "stopped.json").write_text(json.dumps(record, indent=2) + "\n")
        kept_text = f"the weights before it are in {kept}" if kept else "the weights are no longer finite"
        return NonFiniteLossError(
            f"training loss is {loss} at epoch {where['epoch']}, step {where['step']}; stopping: "
            f"{kept_text}, the last epoch's checkpoint is {last or 'not written yet'} (stopped.json). "
            "Try a lower learning rate."
        )

    def _eval_step(self, batch, metrics: SegmentationMetrics, prefix: str) -> None:
        images, masks = batch
        logits = self(images)
        loss = segmentation_loss(logits, masks, self.hparams.loss, self.class_weight)
        self.log(f"{prefix}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(images))
        metrics.update(logits, masks)

    def _log_scores(self, metrics: SegmentationMetrics, prefix: str) -> dict:
        scores = metrics.compute()
        metrics.reset()
        headline = "digit_miou" if "digit_miou" in scores else "miou"
        for key in ("pixel_acc", "miou", "digit_miou"):
            if key in scores:
                self.log(f"{prefix}/{key}", scores[key].float(), prog_bar=key == headline)
        return scores

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_scores(self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        scores = self._log_scores(self.test_metrics, "test")
        for name, v in zip(self.class_names, scores["iou"]):
            self.log(f"test/iou_{name}", v.float())
        self.test_scores = {k: v.tolist() for k, v in scores.items()}
        self.test_scores["classes"] = [str(n) for n in self.class_names]
        if self.trainer.is_global_zero:
            table = format_table(scores, [str(n) for n in self.class_names])
            print(f"\ntest split, {self.hparams.arch}:\n{table}")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).argmax(1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        planned = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = build_scheduler(self.scheduler_factory, optimizer, planned)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
