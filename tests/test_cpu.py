"""The CPU runtime setting: applied by a model's first CPU forward, not by import; opt-out works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import torch, zoo, zoo.cpu
m = zoo.create_model("vgg4_dilated")
before = zoo.cpu._applied
with torch.no_grad():
    m.eval()(torch.rand(1, 1, 8, 8))
print(before, zoo.cpu._applied)
"""


def _run(env_value: str | None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ZOO_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["ZOO_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_applied_by_the_first_forward_not_by_import():
    assert _run(None) == "False True"


def test_opt_out():
    assert _run("0") == "False False"
