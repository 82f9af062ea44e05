"""The training command behind `train.py`: a LightningCLI over SegmentationModule + M2NISTDataModule."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from zoo.data.datamodule import M2NISTDataModule
from zoo.module import NonFiniteLossError, SegmentationModule

RUNS = Path("checkpoints") / "runs"


class ZooCLI(LightningCLI):
    """`fit` trains, keeps the best (val digit mIoU) and last checkpoints, then tests the best."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="test the best checkpoint after fit")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        # an unknown arch is reported by create_model, with the closest names
        if not cfg.trainer.default_root_dir:
            cfg.trainer.default_root_dir = str(RUNS / cfg.model.arch)

    def instantiate_trainer(self, **kwargs):
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = cfg["trainer"]
        root = Path(trainer_cfg["default_root_dir"])
        if trainer_cfg.get("logger") in (None, True):
            csv = CSVLogger(root, name="logs")
            trainer_cfg["logger"] = [csv, TensorBoardLogger(root, name="logs", version=csv.version)]
        callbacks = list(trainer_cfg.get("callbacks") or [])
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(
                ModelCheckpoint(
                    dirpath=root,
                    filename="best",
                    monitor="val/digit_miou",
                    mode="max",
                    save_last=True,
                    enable_version_counter=False,
                )
            )
            callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        trainer_cfg["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best")
            self.write_results()

    def after_test(self) -> None:
        self.write_results()

    def write_results(self) -> None:
        if not self.trainer.is_global_zero or self.model.test_scores is None:
            return
        root = Path(self.trainer.default_root_dir)
        ckpt = self.trainer.checkpoint_callback
        scores = self.model.test_scores
        results = {
            "arch": self.model.hparams.arch,
            "model_kwargs": self.model.hparams.model_kwargs or {},
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "nonzero_parameters": int(sum((p != 0).sum().item() for p in self.model.parameters())),
            "epochs": self.trainer.current_epoch,
            "best_checkpoint": str(ckpt.best_model_path) if ckpt else None,
            "data": self.datamodule.source,
            "test": scores,
        }
        path = root / "results.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {path}")


def main(argv: list[str] | None = None, **cli_kwargs) -> int:
    """Run the CLI; with no arguments, fit the default model (then test it)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["fit", "--config", str(Path(__file__).resolve().parent.parent / "configs" / "default.yaml")]
        if not Path(argv[-1]).is_file():
            argv = ["fit"]
    try:
        ZooCLI(
            SegmentationModule,
            M2NISTDataModule,
            args=argv,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"max_epochs": 10, "deterministic": "warn"},
            auto_configure_optimizers=False,
            **cli_kwargs,
        )
    except (ValueError, FileNotFoundError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
