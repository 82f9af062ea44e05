"""The training command behind `train.py` and `python -m zoo train`: LightningCLI wiring, nothing more.

A LightningCLI over SegmentationModule and a data module (`M2NISTDataModule` by default,
`--data FolderSegmentation --data.root DIR` for your own images), starting from the packaged
recipe (`configs/default.yaml` beside this file, LightningCLI's `default_config_files`)."""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from pathlib import Path

import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from zoo.checkpoint import read_checkpoint, upgrade_hyperparameters
from zoo.cpu import has_bf16, keep_freed_memory
from zoo.data.folder import FolderDataError
from zoo.training.callbacks import MagnitudePruning, RunReport
from zoo.training.datamodules import M2NISTDataModule, SegmentationData
from zoo.training.module import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER, NonFiniteLossError, SegmentationModule

RUNS = Path("checkpoints") / "runs"
CONFIGS = Path(__file__).resolve().parent / "configs"  # packaged: the wheel runs what the checkout runs
REPORT_IMAGES = 8
# what the data tells the model (SegmentationData's attributes -> SegmentationModule's arguments)
DATA_LINKS = ("num_classes", "in_channels", "class_names", "background", "normalization")
log = logging.getLogger(__name__)


def default_precision(accelerator: str = "auto") -> str:
    """Mixed precision where the hardware runs it natively, else fp32.

    GPU: bf16 autocast, fp16 on GPUs without bf16. CPU: bf16 autocast where the processor has
    bf16 instructions (faster training steps: docs/benchmarks.md), fp32 where it would be emulated.
    Weights, batch-norm statistics and the loss stay fp32 under autocast.
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if has_bf16() else "32-true"


class ZooCLI(LightningCLI):
    """`fit` trains, keeps the best (the data's `monitor`: M2NIST's digit mIoU, else mean IoU) and
    last checkpoints, then tests the best."""

    def __init__(self, *args, command: str = "", **kwargs) -> None:
        self.command = command  # recorded in results.json (RunReport)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="test the best checkpoint after fit"
        )
        parser.add_lightning_class_args(MagnitudePruning, "pruning")
        parser.set_defaults({"model.optimizer": DEFAULT_OPTIMIZER, "model.lr_scheduler": DEFAULT_SCHEDULER})
        # M2NIST unless --data names another module (configs may give its arguments alone)
        if self.subclass_mode_data:
            parser.set_defaults({"data": {"class_path": f"{M2NISTDataModule.__module__}.M2NISTDataModule"}})
        for name in DATA_LINKS:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI applies a checkpoint's hyperparameters over the config; zoo 0.1's spelled the
        # optimizer as strings, which today's options reject: apply them in today's spelling
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        legacy = (
            upgrade_hyperparameters(read_checkpoint(Path(path))) if path and Path(path).is_file() else None
        )
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
        # a smoke run keeps no checkpoint: Lightning 2.6's ModelCheckpoint(save_last=True) would
        # still overwrite the folder's last.ckpt when its fast_dev_run ends
        if not trainer_cfg.get("fast_dev_run") and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            # Lightning warns of a non-empty folder on every run (the config is written there first);
            # say instead when a fit will overwrite another run's checkpoints
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            held = [p.name for p in (root / "best.ckpt", root / "last.ckpt") if p.is_file()]
            if self.subcommand == "fit" and held and not cfg.get("ckpt_path"):  # a resume continues it
                log.warning(
                    "%s already holds a run (%s): this fit replaces it; give --trainer.default_root_dir "
                    "for a folder of its own",
                    root,
                    ", ".join(held),
                )
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
        if not any(isinstance(c, RunReport) for c in callbacks):
            callbacks.append(RunReport(command=self.command, images=REPORT_IMAGES))
        trainer_cfg["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        if self.trainer.fast_dev_run:  # a smoke run keeps no checkpoint to test
            self.trainer.test(self.model, datamodule=self.datamodule)
            return
        ckpt = self.trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt else ""
        # a fit resumed from another folder inherits the old run's best path, which may be gone;
        # then the weights the fit ended with are tested, and results.json says so
        on_disk = bool(best) and Path(best).is_file()
        if not on_disk:
            print(
                f"note: the best checkpoint on record ({best or 'none'}) is not on disk: testing the "
                "fit's final weights"
            )
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if on_disk else None)


def default_config_files(precision: str | None = None) -> list[Path]:
    """The packaged recipe every command starts from; its fp32 epoch count where training runs in fp32."""
    fp32 = (precision or default_precision()) == "32-true"
    return [CONFIGS / "default.yaml", *([CONFIGS / "default_fp32.yaml"] if fp32 else [])]


def parser_kwargs(run: bool = True) -> dict:
    """LightningCLI's `parser_kwargs` that apply the packaged recipe (per subcommand when `run`)."""
    kwargs = {"default_config_files": [str(p) for p in default_config_files()]}
    return {name: kwargs for name in ZooCLI.subcommands()} if run else kwargs


def main(argv: list[str] | None = None, program: str = "python train.py", **cli_kwargs) -> int:
    """Run the CLI; with no arguments, fit the default model (then test it).

    Args:
        argv: the arguments (default: the command line's).
        program: how the command is named in results.json.
        cli_kwargs: go to `ZooCLI`; `trainer_defaults` given there extend the defaults below.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keep_freed_memory()  # measured faster on a CPU (zoo.cpu); ZOO_KEEP_FREED_MEMORY=0 turns it off
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["fit"]  # the packaged recipe, as it stands
    elif argv is None:
        args = None  # LightningCLI reads sys.argv itself
    command = shlex.join([*program.split(), *(sys.argv[1:] if argv is None else argv)])
    trainer_defaults = {"deterministic": "warn", **cli_kwargs.pop("trainer_defaults", {})}
    cli_kwargs.setdefault("parser_kwargs", parser_kwargs())
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
