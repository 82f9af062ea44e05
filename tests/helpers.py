"""Shared test helpers (tests/ is on sys.path: `from helpers import ...`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent


def load_tool(name: str) -> ModuleType:
    """A script of tools/ as a module (tools/ is not a package: the scripts are not installed)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def random_batchnorm(model: nn.Module) -> nn.Module:
    """Batch-norm statistics and affine parameters away from the identity (a missing BN shows); eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def cli_for(args: list[str]):
    """The train.py parser over the packaged recipe, built but not run."""
    from zoo.training.cli import ZooCLI, parser_kwargs
    from zoo.training.datamodules import SegmentationData
    from zoo.training.module import SegmentationModule

    return ZooCLI(
        SegmentationModule,
        SegmentationData,
        subclass_mode_data=True,
        args=[*args, "--trainer.logger", "false"],
        parser_kwargs=parser_kwargs(run=False),
        run=False,
    )
