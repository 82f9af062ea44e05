"""Tiled inference: the same labels as the whole image, for every model; what a too-small overlap breaks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import random_batchnorm

import zoo
from zoo.inference import tile_plan


def heavy(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name.endswith("_wide") else name


@pytest.mark.parametrize("name", [heavy(n) for n in zoo.list_models()])
def test_tiles_reproduce_the_whole_image(name):
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model(name))
    x = torch.rand(1, 1, 257, 391)  # odd, prime-ish: no tile size divides it
    plan = tile_plan(model, 257, 391)
    whole_labels, whole = zoo.predict(model, x, return_probs=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiled_labels, tiled = zoo.predict(model, x, return_probs=True, tile=64)
    if plan.exact:
        assert not caught
        np.testing.assert_allclose(tiled, whole, atol=1e-5)
        assert (tiled_labels == whole_labels).all()
    else:  # coarse logits resized to 257x391: says why, and is exact at a multiple of its stride
        assert "not exact" in str(caught[0].message) and "multiples of" in str(caught[0].message)
        x = torch.rand(1, 1, 256, 392)
        whole = zoo.predict(model, x, return_probs=True)[1]
        np.testing.assert_allclose(zoo.predict(model, x, return_probs=True, tile=64)[1], whole, atol=1e-5)


def spike_model() -> nn.Module:
    # class 0: the sum of the 3x3 taps of a dilation-4 conv (field 9, radius 4); class 1: 0.5
    conv = nn.Conv2d(1, 2, 3, padding=4, dilation=4)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = 1.0
        conv.bias.copy_(torch.tensor([0.0, 0.5]))
    return nn.Sequential(conv)


def test_too_small_an_overlap_changes_a_known_pixel():
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, 4, 12] = 1.0  # read by the outputs at rows 0, 4, 8 and columns 8, 12
    model = spike_model()
    whole = zoo.predict(model, image)
    assert whole[0, 8, 12] == 0 and whole[0, 9, 12] == 1  # class 0 only where a tap hits the spike
    assert tile_plan(model, 16, 16).margin == (4, 4)
    assert (zoo.predict(model, image, tile=8) == whole).all()
    with pytest.warns(UserWarning, match="overlap 3 is below the receptive-field radius 4"):
        cut = zoo.predict(model, image, tile=8, overlap=3)
    # the tiles with core rows 8..15 start at row 5 and no longer see row 4: outputs (8, 8) and
    # (8, 12) lose the spike; rows 0 and 4 are in the first tiles, which hold row 4
    assert sorted(zip(*np.nonzero(cut[0] != whole[0]))) == [(8, 8), (8, 12)]


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model("vgg4_dilated"))
    x = torch.rand(2, 1, 30, 40)
    with torch.no_grad():
        mean = (model(x) + model(x.flip(-1)).flip(-1)) / 2
    labels, probs = zoo.predict(model, x, return_probs=True, tta="flip")
    np.testing.assert_allclose(probs, mean.softmax(1).numpy(), atol=1e-6)
    tiled = zoo.predict(model, x, return_probs=True, tta="flip", tile=16)[1]
    np.testing.assert_allclose(tiled, probs, atol=1e-5)


def test_bad_tiling_arguments():
    model = zoo.create_model("vgg4_dilated")
    x = torch.rand(1, 1, 20, 20)
    for kwargs, message in [
        (dict(tile=0), "tile must be a positive int"),
        (dict(overlap=4), "pass tile= too"),
        (dict(tile=8, overlap=-1), "overlap must be >= 0"),
        (dict(tta="rotate"), "tta must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            zoo.predict(model, x, **kwargs)
    with pytest.raises(ValueError, match="sees the whole image"):
        zoo.predict(zoo.create_model("vgg4_dilated", head="classify", num_classes=3), x, tile=8)


class Untraceable(nn.Module):
    def forward(self, x):
        return x.repeat(1, 2, 1, 1) if x.sum() > 0 else x.repeat(1, 2, 1, 1)  # data-dependent control flow


def test_untraceable_model_needs_an_explicit_overlap():
    x = torch.rand(1, 1, 20, 20)
    with pytest.raises(ValueError, match="pass overlap="):
        zoo.predict(Untraceable(), x, tile=8)
    with pytest.warns(UserWarning, match="the overlap of 2 is unchecked"):
        labels = zoo.predict(Untraceable(), x, tile=8, overlap=2)
    assert (labels == zoo.predict(Untraceable(), x)).all()  # pointwise: any overlap will do


def test_progress_shows_on_request_and_stays_silent_off_a_terminal(capfd):
    from zoo.data.splits import generate_splits
    from zoo.rf import effective_receptive_field

    model = zoo.create_model("vgg4_dilated")
    x = torch.rand(1, 1, 70, 70)
    zoo.predict(model, x, tile=32)  # stderr is captured here: not a terminal
    generate_splits({"test": 20})
    effective_receptive_field(model, samples=1, inits=2)
    assert capfd.readouterr().err == ""
    zoo.predict(model, x, tile=32, progress=True)
    assert "predict" in capfd.readouterr().err
    generate_splits({"test": 20}, progress=True)
    assert "composing 20 images" in capfd.readouterr().err
    effective_receptive_field(model, samples=1, inits=2, progress=True)
    assert "effective field" in capfd.readouterr().err


def test_onnx_model_tiles_like_the_pytorch_model(tmp_path):
    from zoo.inference import OnnxModel

    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model("vgg4_dilated", widths=[4, 6, 8, 8]))
    path = zoo.export_onnx(model, tmp_path / "m.onnx")
    x = torch.rand(2, 1, 75, 93)
    whole, probs = zoo.predict(model.eval(), x, return_probs=True)
    onnx = OnnxModel(path, source=model)
    labels, onnx_probs = zoo.predict(onnx, x, return_probs=True, tile=32)
    np.testing.assert_allclose(onnx_probs, probs, atol=1e-5)
    assert (labels == whole).all()
    with pytest.raises(ValueError, match="pass overlap="):  # without its source, no field to trace
        zoo.predict(OnnxModel(path), x, tile=32)


def test_label_dtype_is_the_smallest_that_holds_the_classes():
    from zoo.inference import label_dtype

    assert [label_dtype(c) for c in (2, 256, 257, 32768, 32769)] == [
        np.uint8, np.uint8, np.int16, np.int16, np.int32
    ]  # fmt: skip


def test_tiles_write_into_a_memmap_and_match_the_whole_image(tmp_path):
    # an image labelled into a file-backed array, tile by tile: the labels of the whole image at once
    torch.manual_seed(0)
    model = zoo.create_model("vgg4_dilated").eval()
    image = np.random.default_rng(0).integers(0, 256, (150, 170), dtype=np.uint8)
    whole = zoo.predict(model, image)
    out = np.lib.format.open_memmap(tmp_path / "labels.npy", mode="w+", dtype=np.uint8, shape=image.shape)
    returned = zoo.predict(model, image, tile=64, out=out)
    assert returned is out
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), whole)
    labels, probs = zoo.predict(model, image, tile=64, return_probs=True, probs_dtype=np.float16)
    assert probs.dtype == np.float16 and probs.shape == (11, 150, 170)
    np.testing.assert_array_equal(labels, whole)
    with pytest.raises(ValueError, match="out= must be an integer array of shape \\(150, 170\\)"):
        zoo.predict(model, image, out=np.empty((150, 171), np.uint8))
    with pytest.raises(ValueError, match="too small for 300 classes"):
        zoo.predict(
            zoo.create_model("vgg4_dilated", num_classes=300), image, out=np.empty((150, 170), np.uint8)
        )


def test_backends_give_the_plain_labels_and_auto_picks_onnxruntime_for_fp32(monkeypatch):
    pytest.importorskip("onnxruntime")
    from zoo.inference import choose_backend

    torch.manual_seed(0)
    model = zoo.create_model("vgg4_dilated", pretrained=True).eval()
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 84), dtype=np.uint8)
    plain = zoo.predict(model, images, backend="torch")
    monkeypatch.delenv("ZOO_PREDICT_BACKEND")
    assert choose_backend(model, "auto", None) == "onnxruntime"
    assert choose_backend(model, "auto", torch.bfloat16) == "torch"
    np.testing.assert_array_equal(zoo.predict(model, images), plain)  # auto: onnxruntime
    big = np.random.default_rng(1).integers(0, 256, (130, 150), dtype=np.uint8)
    np.testing.assert_array_equal(zoo.predict(model, big, tile=64), zoo.predict(model, big, backend="torch"))
    with pytest.raises(ValueError, match="fp32 only"):
        zoo.predict(model, images, backend="onnxruntime", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="backend must be one of"):
        zoo.predict(model, images, backend="tensorrt")


def test_a_backend_follows_the_weights(monkeypatch):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = zoo.create_model("vgg4_dilated", num_classes=3).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 50), dtype=np.uint8)
    zoo.predict(model, images, backend="onnxruntime")  # built for these weights
    with torch.no_grad():
        model.head.conv.bias.copy_(torch.tensor([0.0, 0.0, 1e3]))  # class 2 everywhere now
    assert (zoo.predict(model, images, backend="onnxruntime") == 2).all()


def test_a_backend_that_cannot_be_built_falls_back_with_a_warning(monkeypatch):
    import zoo.inference

    def broken(model, backend):
        raise RuntimeError("no such runtime here")

    monkeypatch.setattr(zoo.inference, "_build_runner", broken)
    assert_compile_falls_back_to_torch(
        "backend 'compile' is unavailable .*no such runtime here.*using 'torch'"
    )


def assert_compile_falls_back_to_torch(warning: str) -> None:
    """backend="compile" warns `warning` and gives the labels of backend="torch"."""
    model = zoo.create_model("vgg4_dilated").eval()
    image = np.zeros((20, 30), np.uint8)
    with pytest.warns(UserWarning, match=warning):
        labels = zoo.predict(model, image, backend="compile")
    np.testing.assert_array_equal(labels, zoo.predict(model, image, backend="torch"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "compile"])
@pytest.mark.parametrize("name", zoo.list_models(pretrained=True))
def test_every_shipped_model_gives_the_plain_labels_on_each_backend(name, backend):
    pytest.importorskip("onnxruntime")
    model = zoo.create_model(name, pretrained=True).eval()
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 84), dtype=np.uint8)
    plain = zoo.predict(model, images, backend="torch")
    assert (zoo.predict(model, images, backend=backend) == plain).mean() >= 0.9999


def test_a_compiled_graph_that_fails_at_its_first_call_falls_back_with_a_warning(monkeypatch):
    import zoo.inference

    def fails(*args, **kwargs):
        raise RuntimeError("LoweringException: cannot lower this")

    monkeypatch.setattr(zoo.inference.torch, "compile", lambda model, dynamic: fails)
    assert_compile_falls_back_to_torch(
        "backend 'compile' failed for this model .*cannot lower this.*using 'torch'"
    )
