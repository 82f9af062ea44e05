"""`pip install .` (a real wheel, not editable) gives a working `import zoo`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    # system site-packages only lends torch/numpy; zoo itself must come from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    wheels = tmp_path / "wheels"
    subprocess.run(
        [str(py), "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True
    )
    (wheel,) = wheels.glob("fullres_zoo-*.whl")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    code = (
        "import torch, zoo; "
        "assert zoo.__file__.startswith(%r), zoo.__file__; "
        "m = zoo.create_model('vgg4_dilated'); "
        "print(tuple(m(torch.rand(2, 1, 64, 84)).shape))" % str(venv)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 11, 64, 84)"
