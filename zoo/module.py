"""The Lightning module: any registered model, a segmentation loss, whole-split metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytorch_lightning as pl
import torch

from zoo.cpu import avoid_bf16_conv_fault
from zoo.data.m2nist import BACKGROUND, NUM_CLASSES
from zoo.losses import median_frequency_weights, segmentation_loss
from zoo.metrics import SegmentationMetrics, format_table
from zoo.registry import create_model

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "none")
INIT_PARTS = ("all", "features")
FREEZE = (None, "features")
NONFINITE_CHECKPOINT = "before_nonfinite.ckpt"  # the weights a non-finite loss stopped at


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class SegmentationModule(pl.LightningModule):
    """Train, validate and test a registered zoo model on per-pixel labels.

    Hyperparameters are plain values, so `load_from_checkpoint(path, weights_only=True)` rebuilds
    the model from `arch` and `model_kwargs`.

    Args:
        arch: a name from `zoo.list_models()`.
        model_kwargs: keyword arguments for `zoo.create_model` (num_classes defaults to 11).
        loss: "ce" (cross-entropy) or "ce+dice".
        class_weights: None, "median_frequency" (from the training labels) or one float per class.
        optimizer: "adamw" or "sgd" (momentum 0.9, nesterov).
        lr, weight_decay: optimizer settings; `lr` is the peak rate of the schedule.
        schedule: "onecycle" (warm-up then cosine decay), "cosine" or "none".
        channels_last: keep the model's channels_last weights (as `zoo.create_model` makes them;
            measured faster on CPU and GPU); False converts them to NCHW.
        compile: wrap the model in `torch.compile`.
        init_from: start a fit from these weights (a `train.py` .ckpt or shipped .safetensors of
            the same architecture), e.g. a second, lower-rate stage; ignored when resuming.
        init_parts: "all" (the whole model, same architecture) or "features" (only the backbone,
            from a model of any head whose `features` match ours, e.g. a new head on trained features).
        freeze: "features" trains only the head: the backbone's weights stay fixed and its batch
            norms keep their running statistics (its forward then records nothing for autograd
            and takes the fused inference path).
    """

    def __init__(
        self,
        arch: str = "vgg4_dilated",
        model_kwargs: dict | None = None,
        loss: str = "ce",
        class_weights: str | list[float] | None = None,
        optimizer: str = "adamw",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        schedule: str = "onecycle",
        channels_last: bool | None = True,
        compile: bool = False,
        init_from: str | None = None,
        init_parts: str = "all",
        freeze: str | None = None,
    ) -> None:
        super().__init__()
        if init_parts not in INIT_PARTS:
            raise ValueError(f"init_parts must be one of {INIT_PARTS}, found {init_parts!r}")
        if freeze not in FREEZE:
            raise ValueError(f"freeze must be one of {FREEZE}, found {freeze!r}")
        if loss not in ("ce", "ce+dice"):
            raise ValueError(f"loss must be 'ce' or 'ce+dice', found {loss!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, found {optimizer!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, found {schedule!r}")
        if not lr > 0 or not weight_decay >= 0:
            raise ValueError(
                f"lr must be > 0 and weight_decay >= 0, found lr={lr}, weight_decay={weight_decay}"
            )
        if not (isinstance(class_weights, (list, tuple)) or class_weights in (None, "median_frequency")):
            raise ValueError(
                f"class_weights must be None, 'median_frequency' or a list, found {class_weights!r}"
            )
        self.save_hyperparameters()
        kwargs = {"num_classes": NUM_CLASSES, **(model_kwargs or {})}
        self.model = create_model(arch, **kwargs)
        self.num_classes = self.model.num_classes
        if freeze == "features":
            self.model.features.requires_grad_(False)
        weights = None
        if isinstance(class_weights, (list, tuple)):
            if len(class_weights) != self.num_classes:
                raise ValueError(f"class_weights needs {self.num_classes} values, found {len(class_weights)}")
            weights = torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weight", weights, persistent=False)
        background = BACKGROUND if self.num_classes == NUM_CLASSES else None
        self.val_metrics = SegmentationMetrics(self.num_classes, background)
        self.test_metrics = SegmentationMetrics(self.num_classes, background)
        self.test_scores: dict | None = None
        self._schedule_steps: int | None = None
        self._resumed_schedule_steps: int | None = None

    def on_fit_start(self) -> None:
        if self.hparams.init_from and self.trainer.ckpt_path is None:
            from zoo.checkpoint import load, load_state_checked

            path = str(self.hparams.init_from)
            if self.hparams.init_parts == "features":
                # any architecture whose backbone matches ours key for key and shape for shape
                source = load(path)
                load_state_checked(self.model.features, source.features.state_dict(), f"{path} (features)")
            else:
                # load() checks the file's architecture against ours and names both when they differ
                source = load(path, arch=self.hparams.arch, **self.model.model_kwargs)
                load_state_checked(self.model, source.state_dict(), path)

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze == "features":
            # frozen means its batch-norm statistics too (Lightning restores each submodule's
            # mode after validation, so once per epoch is enough)
            self.model.features.eval()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the schedule's planned length: a cosine LambdaLR's state does not hold it
        checkpoint["schedule_steps"] = self._schedule_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_schedule_steps = checkpoint.get("schedule_steps")

    def on_train_start(self) -> None:
        # a resumed schedule keeps the length it was built with: a one-cycle cannot run longer,
        # and a cosine rebuilt for another length would silently reshape the rest of the run
        sched = self.lr_schedulers()
        planned = int(self.trainer.estimated_stepping_batches)
        if isinstance(sched, torch.optim.lr_scheduler.OneCycleLR):
            kind, before, changed = "one-cycle", sched.total_steps, sched.total_steps < planned
        else:
            before = self._resumed_schedule_steps
            kind, changed = "cosine", self.hparams.schedule == "cosine" and before not in (None, planned)
        if changed:
            raise ValueError(
                f"this checkpoint's {kind} schedule ends after {before} steps, but the "
                f"run now plans {planned}: resume with the trainer settings it started with, or "
                "start a new fit from its weights with --model.init_from"
            )

    def setup(self, stage: str) -> None:
        if self.hparams.class_weights == "median_frequency" and self.class_weight is None:
            labels = torch.from_numpy(self.trainer.datamodule.splits["train"][1])
            self.class_weight = median_frequency_weights(labels, self.num_classes).to(self.device)
        if self.hparams.channels_last is False:
            self.model.to(memory_format=torch.contiguous_format)
        elif str(self.trainer.precision).startswith("bf16") and self.trainer.strategy.root_device.type == "cpu":
            avoid_bf16_conv_fault(self.model)
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
        record = {"reason": f"training loss is {loss}", **where, "weights": str(kept) if kept else None, "last": last}
        if self.trainer.is_global_zero:
            root.mkdir(parents=True, exist_ok=True)
            (root / "stopped.json").write_text(json.dumps(record, indent=2) + "\n")
        kept_text = f"the weights before it are in {kept}" if kept else "the weights are no longer finite"
        return NonFiniteLossError(
            f"training loss is {loss} at epoch {where['epoch']}, step {where['step']}; stopping: {kept_text}, "
            f"the last epoch's checkpoint is {last or 'not written yet'} (stopped.json). Try a lower --model.lr."
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
        for key in ("pixel_acc", "miou", "digit_miou"):
            self.log(f"{prefix}/{key}", scores[key].float(), prog_bar=key == "digit_miou")
        return scores

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_scores(self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        scores = self._log_scores(self.test_metrics, "test")
        for c, v in enumerate(scores["iou"]):
            self.log(f"test/iou_{c}", v.float())
        self.test_scores = {k: v.tolist() for k, v in scores.items()}
        if self.trainer.is_global_zero:
            print(f"\ntest split, {self.hparams.arch}:\n{format_table(scores)}")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).argmax(1)

    def configure_optimizers(self):
        h = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        if h.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=h.lr, weight_decay=h.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=h.lr, momentum=0.9, nesterov=True, weight_decay=h.weight_decay)
        if h.schedule == "none":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        self._schedule_steps = total
        if h.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=h.lr, total_steps=total, pct_start=0.15)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
