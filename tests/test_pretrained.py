"""Every shipped weight: intact, loadable, and as good as its model card says."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.data import generate_splits
from zoo.hub import pretrained_card, weight_paths
from zoo.inference import predict
from zoo.viz import colorize

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the example imports zoo from this checkout
SHIPPED = zoo.list_models(pretrained=True)
CARD_KEYS = {"arch", "model_kwargs", "preprocessing", "data", "training", "metrics", "parameters", "sha256"}


@pytest.fixture(scope="module")
def test_split():
    card = pretrained_card(SHIPPED[0])
    seed, size = card["data"]["seed"], card["data"]["test_size"]
    return generate_splits({"test": size}, seed=seed)["test"]


def digit_miou_numpy(pred, truth, classes=11, background=10):
    """Written apart from zoo.metrics: a bincount confusion matrix over the whole split."""
    conf = np.bincount(truth.ravel().astype(np.int64) * classes + pred.ravel(), minlength=classes**2)
    conf = conf.reshape(classes, classes)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = tp / np.maximum(union, 1)
    return iou[[c for c in range(classes) if c != background]].mean(), (tp.sum() / conf.sum())


def test_the_default_model_ships():
    assert "vgg4_dilated" in SHIPPED


def test_every_model_but_the_wide_variants_ships():
    # the README's model table says the *_wide variants are the ones not trained here
    assert set(SHIPPED) == set(zoo.list_models()) - set(zoo.list_models("*_wide"))


@pytest.mark.parametrize("name", SHIPPED)
def test_card_and_checksum(name):
    weights, card_path = weight_paths(name)
    card = json.loads(card_path.read_text())
    assert CARD_KEYS <= set(card) and card["arch"] == name
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["sha256"]
    model = zoo.create_model(name, pretrained=True)
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    assert card["preprocessing"]["scale"] == 255 and card["training"]["command"].startswith("python train.py")


@pytest.mark.parametrize("name", SHIPPED)
def test_reproduces_recorded_test_metrics(name, test_split):
    images, labels = test_split
    card = pretrained_card(name)
    pred = predict(zoo.create_model(name, pretrained=True), images, batch_size=100)
    digit_miou, pixel_acc = digit_miou_numpy(pred, labels)
    assert digit_miou == pytest.approx(card["metrics"]["digit_miou"], abs=2e-3)
    assert pixel_acc == pytest.approx(card["metrics"]["pixel_acc"], abs=2e-4)


def test_example_app_end_to_end(tmp_path, test_split):
    images, _ = test_split
    canvas = np.zeros((100, 150), np.uint8)  # any size: two test images side by side, padded
    canvas[10:74, 0:84], canvas[30:94, 66:150] = images[0], np.maximum(canvas[30:94, 66:150], images[1])
    src, out = tmp_path / "digits.png", tmp_path / "mask.png"
    Image.fromarray(canvas).save(src)
    run = subprocess.run(
        [sys.executable, "examples/segment.py", str(src), str(out), "--model", "vgg4_dilated"],
        capture_output=True, text=True, check=False, cwd=ROOT, env=ENV,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    mask = np.asarray(Image.open(out).convert("RGB"))
    expected = colorize(predict(zoo.create_model("vgg4_dilated", pretrained=True), canvas))
    np.testing.assert_array_equal(mask, expected)
    assert "digits found" in run.stdout
    bad = subprocess.run(
        [sys.executable, "examples/segment.py", str(src), str(out), "--model", "vgg4_dilatd"],
        capture_output=True, text=True, check=False, cwd=ROOT, env=ENV,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown model 'vgg4_dilatd'" in bad.stderr
