"""Lightning callbacks used by `train.py`: magnitude pruning, and the run report (results.json + figure)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelPruning
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from zoo.inference import predict
from zoo.models.base import count_parameters
from zoo.viz import read_metrics_csv, save_training_report

log = logging.getLogger(__name__)


class MagnitudePruning(ModelPruning):
    """L1 magnitude pruning of every convolution weight to a target sparsity.

    When epoch `start_epoch` begins, the smallest `amount` fraction of all convolution weights
    (ranked together across layers, or with `per_layer` within each layer) is zeroed and masked;
    training goes on with the mask, so pruned weights stay zero, and that epoch's validation and
    checkpoints already see the pruned model. Checkpoints hold plain, already-zeroed weights; after
    a resume the mask is rebuilt when the next epoch begins. `amount=0` turns pruning off.

    Args:
        amount: target fraction of convolution weights set to zero, in [0, 1).
        start_epoch: the first epoch trained with the mask.
        per_layer: prune `amount` of each convolution's weights instead of `amount` of all of them.
    """

    def __init__(self, amount: float = 0.0, start_epoch: int = 0, per_layer: bool = False) -> None:
        if not 0 <= amount < 1:
            raise ValueError(f"pruning amount must be in [0, 1), found {amount}")
        if start_epoch < 0:
            raise ValueError(f"pruning start_epoch must be >= 0, found {start_epoch}")
        self.target, self.start_epoch, self.per_layer = float(amount), int(start_epoch), bool(per_layer)
        super().__init__(
            "l1_unstructured",
            parameter_names=["weight"],
            use_global_unstructured=not self.per_layer,
            amount=self.target,
            use_lottery_ticket_hypothesis=False,
            make_pruning_permanent=True,
        )

    def filter_parameters_to_prune(self, parameters_to_prune=()):
        return [(m, name) for m, name in parameters_to_prune if isinstance(m, nn.Conv2d)]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        amount = self._amount_now(trainer.current_epoch)
        if amount:
            # torch.nn.utils.prune flattens weights with .view(-1), which channels_last tensors
            # refuse: prune in NCHW, then give the weights (and masks) their layout back
            self._set_layout(torch.contiguous_format)
            self.apply_pruning(amount)
            self._set_layout(torch.channels_last)

    def _set_layout(self, memory_format: torch.memory_format) -> None:
        for module, name in self._parameters_to_prune:
            for attr in (name, f"{name}_orig", f"{name}_mask"):
                t = module._parameters.get(attr, module._buffers.get(attr))
                if t is not None and t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=memory_format)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # pruning happens when an epoch starts, not (as in ModelPruning) when it ends

    def _amount_now(self, epoch: int) -> float:
        # PyTorch prunes `amount` of the weights still unmasked: ask for what reaches the target
        if self.target == 0 or epoch < self.start_epoch:
            return 0.0
        masks = [getattr(m, f"{n}_mask") for m, n in self._parameters_to_prune if hasattr(m, f"{n}_mask")]
        total = sum(getattr(m, n).numel() for m, n in self._parameters_to_prune)
        have = sum(int((mask == 0).sum()) for mask in masks) / total
        need = (self.target - have) / (1 - have)
        if need <= 1 / total:
            return 0.0
        log.info(
            "pruning: epoch %d, %.1f%% -> %.1f%% of convolution weights zero",
            epoch,
            100 * have,
            100 * self.target,
        )
        return need


class RunReport(pl.Callback):
    """After each test: `results.json` (arch, data, parameters, scores, curves) and `results.png`.

    A test that follows a fit in the same process writes `results.*`; a test alone (`train.py
    test`) writes `test_results.*`, so a run's fit results stay as they were. Smoke runs
    (`fast_dev_run`) write nothing.

    Args:
        command: the command line recorded in the file.
        images: test images drawn with their labels and predictions in the figure.
    """

    HISTORY = ("train/loss_epoch", "val/loss", "val/digit_miou", "val/miou")  # per-epoch curves kept

    def __init__(self, command: str = "", images: int = 8) -> None:
        self.command, self.images = command, images
        self.fit_seconds: float | None = None
        self.resumed = False
        self._fit_started: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started = time.perf_counter()
        self.fit_seconds = None
        self.resumed = trainer.ckpt_path is not None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_seconds = time.perf_counter() - self._fit_started

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero or pl_module.test_scores is None:
            return
        if self.fit_seconds is not None:  # the test of a fit: its best checkpoint, else its final weights
            stem, tested = "results", trainer.ckpt_path or "the fit's final weights"
        else:  # what was scored: --ckpt_path, else --model.init_from, else the model as it was built
            stem, tested = "test_results", trainer.ckpt_path or pl_module.initialised_from
            tested = tested or "a freshly initialised model"
        self.write(trainer, pl_module, stem, str(tested))

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stem: str, tested: str) -> Path:
        """`{stem}.json` and `{stem}.png` in the run's folder; returns the JSON's path."""
        root = Path(trainer.default_root_dir)
        ckpt = trainer.checkpoint_callback
        pruning = next((c for c in trainer.callbacks if isinstance(c, MagnitudePruning)), None)
        model = pl_module.model
        results = {
            "arch": pl_module.hparams.arch,
            "command": self.command,
            "model_kwargs": pl_module.hparams.model_kwargs or {},
            "parameters": count_parameters(model),
            "nonzero_parameters": count_parameters(model, nonzero=True),
            "pruning": (
                {"amount": pruning.target, "start_epoch": pruning.start_epoch, "per_layer": pruning.per_layer}
                if pruning
                else None
            ),
            "epochs": trainer.current_epoch,
            "precision": str(trainer.precision),
            "fit_seconds": round(self.fit_seconds or 0.0, 1) or None,
            "best_checkpoint": str(ckpt.best_model_path) if ckpt else None,
            "tested": tested,
            "data": trainer.datamodule.source,
            "test": pl_module.test_scores,
        }
        csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv is not None:
            csv.save()
            curves = read_metrics_csv(*self.history_files(csv))
            results["history"] = {k: curves[k] for k in self.HISTORY if k in curves}  # [[epoch, value], ...]
        path = root / f"{stem}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {path}")
        if csv is not None:
            print(f"report: {self.write_figure(root / f'{stem}.png', trainer, pl_module, curves)}")
        return path

    def history_files(self, csv: CSVLogger) -> list[Path]:
        """This run's metrics.csv; after a resume, the earlier versions' too (oldest first)."""
        if not self.resumed:
            return [Path(csv.log_dir) / "metrics.csv"]
        versions = {}
        for d in Path(csv.root_dir).glob("version_*"):
            number = d.name.removeprefix("version_")
            if number.isdigit() and int(number) <= csv.version and (d / "metrics.csv").is_file():
                versions[int(number)] = d / "metrics.csv"
        return [versions[v] for v in sorted(versions)]

    def write_figure(
        self, path: Path, trainer: pl.Trainer, pl_module: pl.LightningModule, curves: dict
    ) -> Path:
        images, labels = trainer.datamodule.report_samples(self.images)
        predictions = [
            predict(pl_module.model, image, backend="torch") for image in images
        ]  # a one-off: no export
        scores = pl_module.test_scores
        score = (
            f"digit mIoU {scores['digit_miou']:.3f}"
            if "digit_miou" in scores
            else f"mIoU {scores['miou']:.3f}"
        )
        title = f"{pl_module.hparams.arch}: test {score}"
        return save_training_report(path, curves, images, labels, predictions, title)
