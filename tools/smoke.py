"""Smoke test of an installed fullres-zoo, run from outside the checkout: `python tools/smoke.py`.

CI runs it in a fresh virtual environment that installed the built wheel with its real
dependencies (`.ci/run`). Every declared extra must import: a missing one fails here, it is not
skipped. Then: list, create, load pretrained weights, predict, export ONNX, the Hub layout,
explain, the packaged training recipe, and fit one
epoch through `python -m zoo train`, all from the installed package.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import tomllib

# each extra's modules, by import name (pyproject.toml lists the distributions)
EXTRA_MODULES = {
    "train": ["pytorch_lightning", "torchmetrics", "albumentations", "mlxtend", "scipy", "jsonargparse",
              "tensorboard", "matplotlib", "PIL"],
    "onnx": ["onnx", "onnxscript", "onnxruntime"],
    "explain": ["captum"],
    "hub": ["huggingface_hub"],
}  # fmt: skip


def main() -> int:
    import numpy as np
    import torch

    import zoo

    checkout = Path(__file__).resolve().parent.parent
    installed = Path(zoo.__file__).resolve()
    assert checkout not in installed.parents, (
        f"zoo was imported from the checkout ({installed}), not the install"
    )
    pyproject = checkout / "pyproject.toml"
    if pyproject.is_file():  # the extras this script knows must be the ones the project declares
        declared = set(tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]) - {"test"}
        assert declared == set(EXTRA_MODULES), (
            f"extras declared {sorted(declared)}, smoke-tested {sorted(EXTRA_MODULES)}"
        )
    for modules in EXTRA_MODULES.values():
        for module in modules:
            importlib.import_module(module)  # an ImportError here is a broken install
    names = zoo.list_models()
    shipped = zoo.list_models(pretrained=True)
    assert "vgg4_dilated" in shipped and set(shipped) <= set(names), shipped
    model = zoo.create_model("vgg4_dilated", pretrained=True)
    assert "site-packages" in str(zoo.shipped.weights_dir()), zoo.shipped.weights_dir()
    image = np.zeros((64, 84), np.uint8)
    image[20:40, 30:34] = 255  # a stroke like a 1
    labels = zoo.predict(model, image)
    assert labels.shape == (64, 84) and labels.dtype == np.uint8  # the smallest type for 11 classes
    attribution = zoo.explain(model, image, int(labels[30, 31]), pixel=(30, 31), method="guided")
    assert attribution.shape == (64, 84) and torch.isfinite(attribution).all()
    with tempfile.TemporaryDirectory() as tmp:
        import onnxruntime as ort

        path = zoo.export_onnx(model, Path(tmp) / "m.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"images": (image[None, None] / 255.0).astype(np.float32)})
        assert (logits.argmax(1)[0] == labels).mean() > 0.999
        zoo.save_pretrained(model, Path(tmp) / "hub")
        again = zoo.from_pretrained(Path(tmp) / "hub")
        assert (zoo.predict(again, image) == labels).all()
        import subprocess

        from zoo.__main__ import main as zoo_main

        # the wheel carries the recipe train.py runs: `python -m zoo train` shows it, then fits
        shown = subprocess.run(
            [sys.executable, "-m", "zoo", "train", "fit", "--print_config"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "arch: vgg7_dilated" in shown and "lr: 0.02" in shown, shown[-2000:]
        args = ["fit", "--model.arch", "vgg4_dilated", "--model.model_kwargs", '{"widths": [4, 4, 4, 4]}',
                "--data.data_dir", "null", "--data.batch_size", "8", "--data.train_size", "16",
                "--data.val_size", "8", "--data.test_size", "8", "--trainer.max_epochs", "1",
                "--trainer.default_root_dir", tmp, "--trainer.enable_progress_bar", "false"]  # fmt: skip
        assert zoo_main(["train", *args]) == 0, "the one-epoch fit failed"
        assert (Path(tmp) / "results.json").is_file() and (Path(tmp) / "best.ckpt").is_file()
    print(f"smoke: ok ({len(names)} models, {len(shipped)} with weights; zoo from {installed.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
