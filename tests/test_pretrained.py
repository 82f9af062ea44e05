"""Every shipped weight: intact, loadable, and as good as its model card says."""

import functools
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.cpu import has_bf16
from zoo.data import generate_splits
from zoo.inference import predict
from zoo.shipped import available_tags, pretrained_card, weight_paths
from zoo.viz import colorize

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the example imports zoo from this checkout
SHIPPED = zoo.list_models(pretrained=True)
# every shipped weight, default tag or not: "vgg4_dilated.m2nist", "vgg4_dilated.scatter", ...
TAGGED = [f"{name}.{tag}" for name in zoo.list_models() for tag in available_tags(name)]
CARD_KEYS = {"arch", "model_kwargs", "preprocessing", "data", "training", "metrics", "parameters", "sha256"}


def card_test_split(card: dict) -> tuple[np.ndarray, np.ndarray]:
    """The generated test split a card's metrics were measured on: its layout, seed and size."""
    data = card["data"]
    return _test_split(data["layout"], data["seed"], data["test_size"])


@functools.cache
def _test_split(layout: str, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return generate_splits({"test": size}, seed=seed, layout=layout)["test"]


@pytest.fixture(scope="module")
def test_split():
    return card_test_split(pretrained_card(SHIPPED[0]))


def digit_miou_numpy(pred, truth, classes=11, background=10):
    """Written apart from zoo.training.metrics: a bincount confusion matrix over the whole split."""
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


# registered after the scatter-layout weights were retired
NEWER_THAN_SCATTER = {"vgg4_dilated_context", "vgg7_dilated_skip_context", "vgg7_dilated_skip16_context"}


def test_default_weights_trained_on_the_m2nist_layout_and_scatter_weights_kept():
    for name in SHIPPED:
        assert pretrained_card(name)["data"]["layout"] == "m2nist"
        if name not in NEWER_THAN_SCATTER:
            assert pretrained_card(f"{name}.scatter")["data"]["layout"] == "scatter"
        else:
            assert available_tags(name) == ["m2nist"]


@pytest.mark.parametrize("name", TAGGED)
def test_card_and_checksum(name):
    weights, card_path = weight_paths(*name.split("."))
    card = json.loads(card_path.read_text())
    assert CARD_KEYS <= set(card) and f"{card['arch']}.{card['tag']}" == name
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["sha256"]
    model = zoo.create_model(name, pretrained=True)
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    assert card["preprocessing"]["scale"] == 255 and card["training"]["command"].startswith("python train.py")


@pytest.mark.parametrize(
    "name",
    # the deep ResNets and the large kernels on their scatter cards take 5-8 s each: in the slow run
    [
        pytest.param(n, marks=pytest.mark.slow)
        if n.startswith(("resnet18_dilated", "vgg4_large_kernel")) and n.endswith(".scatter")
        else n
        for n in TAGGED
    ],
)
def test_reproduces_recorded_test_metrics(name):
    card = pretrained_card(name)
    images, labels = card_test_split(card)
    # in the precision the training run tested in (bf16-mixed: autocast, as predict's dtype)
    bf16 = str(card["training"].get("precision")).startswith("bf16")
    pred = predict(
        zoo.create_model(name, pretrained=True),
        images,
        batch_size=100,
        dtype=torch.bfloat16 if bf16 else None,
    )
    digit_miou, pixel_acc = digit_miou_numpy(pred, labels)
    assert digit_miou == pytest.approx(card["metrics"]["digit_miou"], abs=2e-3)
    assert pixel_acc == pytest.approx(card["metrics"]["pixel_acc"], abs=2e-4)


def test_example_app_end_to_end(tmp_path, test_split, capsys):
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
    # the other runs in this process (the first one above was a real subprocess)
    spec = importlib.util.spec_from_file_location("segment_example", ROOT / "examples" / "segment.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([str(src), str(tmp_path / "tiled.png"), "--tile", "32"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "tiled.png").convert("RGB")), expected)
    assert example.main([str(src), str(out), "--model", "vgg4_dilatd"]) == 2
    assert "unknown model 'vgg4_dilatd'" in capsys.readouterr().err


@pytest.mark.skipif(not has_bf16(), reason="the CPU has no bf16 instructions (emulated bf16 is slow)")
@pytest.mark.parametrize("name", SHIPPED)
def test_bf16_inference_labels_match_fp32(name):
    images, _ = card_test_split(pretrained_card(name))
    images = images[:100]
    fp32 = predict(zoo.create_model(name, pretrained=True), images, batch_size=100)
    autocast = predict(zoo.create_model(name, pretrained=True), images, batch_size=100, dtype=torch.bfloat16)
    bf16_model = zoo.create_model(name, pretrained=True, dtype=torch.bfloat16)
    assert next(bf16_model.parameters()).dtype == torch.bfloat16
    weights = predict(bf16_model, images, batch_size=100)
    assert (autocast == fp32).mean() >= 0.999 and (weights == fp32).mean() >= 0.999
