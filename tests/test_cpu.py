"""The CPU allocator setting: never a side effect of a model call, applied by train.py, opt-out works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORWARD = """
import torch, zoo, zoo.cpu
m = zoo.create_model("vgg4_dilated")
with torch.no_grad():
    m.eval()(torch.rand(1, 1, 8, 8))
m.train()(torch.rand(2, 1, 8, 8)).sum().backward()
print(zoo.cpu._decided, zoo.cpu._applied)
"""

EXPLICIT = """
import zoo.cpu
print(zoo.cpu.keep_freed_memory(), zoo.cpu._applied)
"""

TRAIN_ENTRY = """
import zoo.training.cli, zoo.cpu
code = zoo.training.cli.main(["fit", "--model.arch", "no_such_model"])
print(code, zoo.cpu._applied)
"""


def _run(script: str, env_value: str | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ZOO_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["ZOO_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_model_calls_change_no_process_setting():
    assert _run(FORWARD) == "False False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_an_explicit_call_applies_it():
    assert _run(EXPLICIT) == "True True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_the_training_entry_point_applies_it():
    assert _run(TRAIN_ENTRY) == "2 True"


def test_opt_out():
    assert _run(EXPLICIT, "0") == "False False"
