"""The training command behind `train.py`: a LightningCLI over SegmentationModule and a data module
(`M2NISTDataModule` by default, `--data FolderSegmentation --data.root DIR` for your own images)."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from zoo.callbacks import MagnitudePruning
from zoo.checkpoint import read_checkpoint, upgrade_hyperparameters
from zoo.cpu import has_bf16, keep_freed_memory
from zoo.data.datamodule import M2NISTDataModule, SegmentationData
from zoo.data.folder import FolderDataError
from zoo.inference import predict
from zoo.models.base import count_parameters
from zoo.module import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER, NonFiniteLossError, SegmentationModule
from zoo.viz import read_metrics_csv, save_training_report

RUNS = Path("checkpoints") / "runs"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
REPORT_IMAGES = 8
HISTORY = ("train/loss_epoch", "val/loss", "val/digit_miou", "val/miou")  # per-epoch curves kept in results.json
# what the data tells the model (SegmentationData's attributes -> SegmentationModule's arguments)
DATA_LINKS = ("num_classes", "in_channels", "class_names", "background", "normalization")


def default_precision(accelerator: str = "auto") -> str:
    """Mixed precision where the hardware runs it natively, else fp32.

    GPU: bf16 autocast, fp16 on GPUs without bf16. CPU: bf16 autocast where the processor has
    bf16 instructions (1.5-2x faster training steps for the full-resolution models here,
    benchmarks/run.py), fp32 where it would be emulated.
    Weights, batch-norm statistics and the loss stay fp32 under autocast.
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if has_bf16() else "32-true"


class ZooCLI(LightningCLI):
    """`fit` trains, keeps the best (the data's `monitor`: M2NIST's digit mIoU, else mean IoU) and
    last checkpoints, then tests the best."""

    resumed = False  # set by a fit given --ckpt_path

    def __init__(self, *args, command: str = "", **kwargs) -> None:
        self.command = command  # recorded in results.json
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="test the best checkpoint after fit"
        )
        parser.add_lightning_class_args(MagnitudePruning, "pruning")
        parser.set_defaults({"model.optimizer": DEFAULT_OPTIMIZER, "model.lr_scheduler": DEFAULT_SCHEDULER})
        if self.subclass_mode_data:  # M2NIST unless --data names another module (configs may give its arguments alone)
            parser.set_defaults({"data": {"class_path": f"{M2NISTDataModule.__module__}.M2NISTDataModule"}})
        for name in DATA_LINKS:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI applies a checkpoint's hyperparameters over the config; zoo 0.1's spelled the
        # optimizer as strings, which today's options reject: apply them in today's spelling
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        legacy = upgrade_hyperparameters(read_checkpoint(Path(path))) if path and Path(path).is_file() else None
        if legacy is None:
            return super()._parse_ckpt_path()
        self.config = self.parser.parse_object({sub: {"model": legacy}}, self.config)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as e:
            # jsonargparse reports a data module's own error inside a list of union types: say it alone
            cause = e
            while cause is not None and not isinstance(cause, FolderDataError):
                cause = cause.__cause__ or cause.__context__
            raise (cause or e) from None

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        # an unknown arch is reported by create_model, with the closest names
        if not cfg.trainer.default_root_dir:
            cfg.trainer.default_root_dir = str(RUNS / cfg.model.arch)
        if cfg.trainer.precision is None:
            cfg.trainer.precision = default_precision(cfg.trainer.accelerator)
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

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
                    monitor=self.datamodule.monitor,
                    mode="max",
                    save_last=True,
                    enable_version_counter=False,
                )
            )
            callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        trainer_cfg["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        self.fit_started = time.perf_counter()
        self.resumed = self.config[self.subcommand].get("ckpt_path") is not None

    def after_fit(self) -> None:
        self.fit_seconds = time.perf_counter() - self.fit_started
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        if self.trainer.fast_dev_run:
            # a smoke run keeps no checkpoint to test, and must not overwrite a real run's results
            self.trainer.test(self.model, datamodule=self.datamodule)
            return
        ckpt = self.trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt else ""
        # a fit resumed from another folder inherits the old run's best path, which may be gone;
        # then the weights the fit ended with are tested, and results.json says so
        on_disk = bool(best) and Path(best).is_file()
        self.tested = best if on_disk else "the fit's final weights"
        if not on_disk:
            print(f"note: the best checkpoint on record ({best or 'none'}) is not on disk: testing {self.tested}")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if on_disk else None)
        self.write_results()

    def after_test(self) -> None:
        # what was scored: --ckpt_path, else --model.init_from, else the model as it was built
        scored = self.trainer.ckpt_path or self.model.initialised_from
        self.tested = str(scored or "a freshly initialised model")
        self.write_results("test_results")  # a later `test` leaves the fit's results.json as it was

    def write_results(self, stem: str = "results") -> None:
        """`{stem}.json` (arch, data, parameters, test scores) and `{stem}.png` (curves, predictions)."""
        if not self.trainer.is_global_zero or self.model.test_scores is None:
            return
        root = Path(self.trainer.default_root_dir)
        ckpt = self.trainer.checkpoint_callback
        pruning = next((c for c in self.trainer.callbacks if isinstance(c, MagnitudePruning)), None)
        model = self.model.model
        results = {
            "arch": self.model.hparams.arch,
            "command": self.command,
            "model_kwargs": self.model.hparams.model_kwargs or {},
            "parameters": count_parameters(model),
            "nonzero_parameters": count_parameters(model, nonzero=True),
            "pruning": (
                {"amount": pruning.target, "start_epoch": pruning.start_epoch, "per_layer": pruning.per_layer}
                if pruning
                else None
            ),
            "epochs": self.trainer.current_epoch,
            "precision": str(self.trainer.precision),
            "fit_seconds": round(getattr(self, "fit_seconds", 0.0), 1) or None,
            "best_checkpoint": str(ckpt.best_model_path) if ckpt else None,
            "tested": getattr(self, "tested", None),
            "data": self.datamodule.source,
            "test": self.model.test_scores,
        }
        csv = next((lg for lg in self.trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv is not None:
            csv.save()
            curves = read_metrics_csv(*self.history_files(csv))
            results["history"] = {k: curves[k] for k in HISTORY if k in curves}  # [[epoch, value], ...]
        path = root / f"{stem}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {path}")
        if csv is not None:
            print(f"report: {self.write_report(root / f'{stem}.png', curves)}")

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

    def write_report(self, path: Path, curves: dict) -> Path:
        images, labels = self.datamodule.report_samples(REPORT_IMAGES)
        predictions = [predict(self.model.model, image, backend="torch") for image in images]  # a one-off: no export
        scores = self.model.test_scores
        score = f"digit mIoU {scores['digit_miou']:.3f}" if "digit_miou" in scores else f"mIoU {scores['miou']:.3f}"
        return save_training_report(path, curves, images, labels, predictions, f"{self.model.hparams.arch}: test {score}")


def default_config() -> Path:
    """What `python train.py` runs: a 10-minute recipe for the precision this machine trains in."""
    return CONFIGS / ("default_fp32.yaml" if default_precision() == "32-true" else "default.yaml")


def main(argv: list[str] | None = None, **cli_kwargs) -> int:
    """Run the CLI; with no arguments, fit the default model (then test it).

    `cli_kwargs` go to `ZooCLI`; `trainer_defaults` given there extend the defaults below.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keep_freed_memory()  # measured faster on a CPU (zoo.cpu); ZOO_KEEP_FREED_MEMORY=0 turns it off
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        config = default_config()
        args = ["fit", "--config", str(config)] if config.is_file() else ["fit"]
    elif argv is None:
        args = None  # LightningCLI reads sys.argv itself
    command = shlex.join(["python", "train.py", *(sys.argv[1:] if argv is None else argv)])
    trainer_defaults = {"max_epochs": 10, "deterministic": "warn", **cli_kwargs.pop("trainer_defaults", {})}
    try:
        ZooCLI(
            SegmentationModule,
            SegmentationData,
            subclass_mode_data=True,
            args=args,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=trainer_defaults,
            auto_configure_optimizers=False,
            command=command,
            **cli_kwargs,
        )
    except (ValueError, FileNotFoundError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
