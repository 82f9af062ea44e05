"""`pip install .` (a real wheel, not editable) gives a working `import zoo`, weights included."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "zoo").rglob("__init__.py")}
    assert found <= listed and "zoo.pretrained" in listed


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_with_weights(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # this environment's site-packages lends torch/numpy/safetensors as a plain path (its .pth
    # files, an editable zoo among them, are not processed); zoo itself must come from the wheel
    import torch

    lent = Path(torch.__file__).resolve().parent.parent
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "lent.pth").write_text(f"{lent}\n")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [str(py), "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True
    )
    (wheel,) = wheels.glob("fullres_zoo-*.whl")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)
    code = f"""
import torch, zoo
assert zoo.__file__.startswith({str(venv)!r}), zoo.__file__
names = zoo.list_models(pretrained=True)
assert "vgg4_dilated" in names, names
m = zoo.create_model("vgg4_dilated", pretrained=True)
assert "site-packages" in str(zoo.shipped.weights_dir()), zoo.shipped.weights_dir()
print(tuple(m(torch.rand(2, 1, 64, 84)).shape), len(names))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    shape, count = out.stdout.strip().rsplit(" ", 1)
    assert shape == "(2, 11, 64, 84)"
    # one model per default-tag weight (each also ships a .scatter tag)
    assert int(count) == len(list((ROOT / "checkpoints").glob("*.m2nist.safetensors")))
