"""What a benchmark ran on, in one line for its JSON: the processor's model name, threads, bf16, PyTorch."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from zoo.cpu import has_bf16


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), else what `platform` says."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe() -> str:
    """e.g. 'AMD EPYC 9B14, 2 threads, bf16 instructions: yes, torch 2.13.0+cpu, no GPU'."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_model()}, {torch.get_num_threads()} threads, bf16 instructions: "
        f"{'yes' if has_bf16() else 'no'}, torch {torch.__version__}, {gpu}"
    )
