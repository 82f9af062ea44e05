"""Loading weights in applications: formats, safety, errors, predict, export."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_batchnorm

import zoo
from zoo.checkpoint import export, load, save_shipped
from zoo.inference import predict

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"widths": [4, 6, 8, 8]}


def lightning_style_checkpoint(path, model, arch="vgg4_dilated", kwargs=SMALL):
    """What train.py writes, built by hand: prefixed state dict + plain hyperparameters."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {"state_dict": state, "hyper_parameters": {"arch": arch, "model_kwargs": kwargs}, "epoch": 2}, path
    )
    return path


@pytest.fixture
def small_model():
    torch.manual_seed(1)
    return random_batchnorm(zoo.create_model("vgg4_dilated", **SMALL))


def same_outputs(a, b):
    x = torch.rand(2, 1, 40, 52)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_load_lightning_checkpoint(tmp_path, small_model):
    model = load(lightning_style_checkpoint(tmp_path / "best.ckpt", small_model))
    assert (
        not model.training and model.arch == "vgg4_dilated" and model.model_kwargs["widths"] == [4, 6, 8, 8]
    )
    same_outputs(model, small_model)


def test_load_plain_state_dict_needs_arch(tmp_path, small_model):
    path = tmp_path / "weights.pt"
    torch.save(small_model.state_dict(), path)
    with pytest.raises(ValueError, match="pass arch="):
        load(path)
    same_outputs(load(path, arch="vgg4_dilated", **SMALL), small_model)


def test_save_pretrained_and_load_pair(tmp_path, small_model):
    weights, card = save_shipped(small_model, tmp_path, "vgg4_dilated", SMALL, {"metrics": None})
    assert weights.name == "vgg4_dilated.m2nist.safetensors" and card.name == "vgg4_dilated.m2nist.json"
    info = json.loads(card.read_text())
    import hashlib

    assert info["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    # 4-6-8-8 by hand: convs 9*(1*4 + 4*6 + 6*8 + 8*8) + biases 26, BN 2*26, head 8*11 + 11
    assert info["parameters"] == 9 * (4 + 24 + 48 + 64) + 26 + 52 + 99
    same_outputs(load(weights), small_model)


def test_checksum_mismatch_and_corruption(tmp_path, small_model):
    weights, card = save_shipped(small_model, tmp_path, "vgg4_dilated", SMALL, {})
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load(weights)
    weights.write_bytes(bytes(data[: len(data) // 2]))  # truncated, card removed: no checksum
    card.unlink()
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load(weights, arch="vgg4_dilated", **SMALL)
    ckpt = lightning_style_checkpoint(tmp_path / "x.ckpt", small_model)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load(ckpt)


def test_mismatched_architecture_and_class_count(tmp_path, small_model):
    ckpt = lightning_style_checkpoint(tmp_path / "a.ckpt", small_model)
    with pytest.raises(ValueError, match="holds a vgg4_dilated, not a cascade10"):
        load(ckpt, arch="cascade10")
    path = tmp_path / "w.pt"
    torch.save(small_model.state_dict(), path)
    with pytest.raises(ValueError, match=r"does not match the architecture cascade10; missing keys"):
        load(path, arch="cascade10")
    with pytest.raises(ValueError, match="shape mismatches: features.0.bn.bias"):
        load(path, arch="vgg4_dilated", widths=[5, 6, 8, 8])
    with pytest.raises(
        ValueError, match="predicts 11 classes but the model was built for 3; build it with num_classes=11"
    ):
        load(path, arch="vgg4_dilated", num_classes=3, **SMALL)


class Payload:
    def __reduce__(self):
        return (Path.write_text, (Path(MARKER[0]), "code ran"))


MARKER = [""]


def test_malicious_pickle_runs_nothing(tmp_path):
    MARKER[0] = str(tmp_path / "pwned")
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Payload(), "hyper_parameters": {"arch": "vgg4_dilated"}}, f)
    # sanity: plain unpickling really would run it
    with open(path, "rb") as f:
        pickle.load(f)
    assert Path(MARKER[0]).read_text() == "code ran"
    Path(MARKER[0]).unlink()
    with pytest.raises(ValueError, match="only weights_only=True loading is allowed"):
        load(path)
    assert not Path(MARKER[0]).exists()


def test_export_from_a_training_run(tmp_path, small_model):
    ckpt = lightning_style_checkpoint(tmp_path / "best.ckpt", small_model)
    (tmp_path / "results.json").write_text(
        json.dumps({"test": {"digit_miou": 0.5}, "command": "python train.py"})
    )
    weights, card = export(ckpt, tmp_path / "out")
    info = json.loads(card.read_text())
    assert info["arch"] == "vgg4_dilated" and info["metrics"]["digit_miou"] == 0.5
    assert info["training"]["command"] == "python train.py" and info["preprocessing"]["scale"] == 255
    same_outputs(load(weights), small_model)


def test_export_of_a_second_stage_records_the_first(tmp_path, small_model):
    first = tmp_path / "stage1"
    first.mkdir()
    (first / "results.json").write_text(
        json.dumps({"command": "python train.py a", "epochs": 60, "fit_seconds": 100.0})
    )
    second = tmp_path / "stage2"
    second.mkdir()
    ckpt = second / "best.ckpt"
    state = {f"model.{k}": v for k, v in small_model.state_dict().items()}
    hp = {"arch": "vgg4_dilated", "model_kwargs": SMALL, "init_from": str(first / "best.ckpt")}
    torch.save({"state_dict": state, "hyper_parameters": hp, "epoch": 20}, ckpt)
    (second / "results.json").write_text(
        json.dumps(
            {"test": {"digit_miou": 0.9, "miou": 0.9, "pixel_acc": 0.99}, "epochs": 24, "fit_seconds": 50.0}
        )
    )
    _, card_path = export(ckpt, tmp_path / "out")
    card = json.loads(card_path.read_text())
    (stage,) = card["training"]["earlier_stages"]
    assert stage["epochs"] == 60 and stage["fit_seconds"] == 100.0 and stage["command"] == "python train.py a"

    from helpers import load_tool

    markdown = load_tool("summary").markdown

    row = {
        "model": "m",
        "params": 1,
        "params_cifar": 1,
        "receptive_field": 3,
        "downsampling": False,
        "cards": {"m2nist": card},
        "scores": {"m2nist": {"m2nist": 0.9, "scatter": 0.8}},
    }
    # the first stage recorded no test score; measured scores as given; both stages: 150 s
    assert (
        markdown([row]).splitlines()[-1] == "| `m` | 1 | 1 | 3 | no |  | 0.900 | 0.800 |  | 60+24 | 2.5 min |"
    )

    # a third run starts from the exported (shipped-form) weights: its card lists all the stages
    third = tmp_path / "stage3"
    third.mkdir()
    hp = {**hp, "init_from": str(card_path.with_suffix(".safetensors")), "init_parts": "features"}
    torch.save({"state_dict": state, "hyper_parameters": hp, "epoch": 9}, third / "best.ckpt")
    (third / "results.json").write_text(
        json.dumps(
            {"test": {"digit_miou": 0.95, "miou": 0.95, "pixel_acc": 0.99}, "epochs": 40, "fit_seconds": 50.0}
        )
    )
    _, card3_path = export(third / "best.ckpt", tmp_path / "out3")
    card3 = json.loads(card3_path.read_text())
    first_stage, second_stage = card3["training"]["earlier_stages"]
    assert first_stage == stage
    assert second_stage["epochs"] == 24 and second_stage["test"]["digit_miou"] == 0.9
    assert (
        markdown([{**row, "cards": {"m2nist": card3}}]).splitlines()[-1].endswith("| 60+24+40 | 3.3 min |")
    )  # 200 s

    # a run that starts from another run's checkpoint, itself a second stage: both stages listed
    fourth = tmp_path / "stage4"
    fourth.mkdir()
    hp = {**hp, "init_from": str(ckpt), "init_parts": "all"}
    torch.save({"state_dict": state, "hyper_parameters": hp, "epoch": 5}, fourth / "best.ckpt")
    (fourth / "results.json").write_text(json.dumps({"test": {"digit_miou": 0.96}, "epochs": 30}))
    _, card4_path = export(fourth / "best.ckpt", tmp_path / "out4")
    one, two = json.loads(card4_path.read_text())["training"]["earlier_stages"]
    assert one == stage and two["from"] == str(ckpt) and two["epochs"] == 24


def test_predict_shapes_dtypes_and_errors(small_model):
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (37, 45), dtype=np.uint8)
    many = rng.integers(0, 256, (5, 37, 45), dtype=np.uint8)
    labels = predict(small_model, many, batch_size=2)
    assert labels.shape == (5, 37, 45) and labels.dtype == np.uint8  # 11 classes fit a byte
    # derived independently: normalise by hand, argmax of the logits
    with torch.no_grad():
        expected = small_model(torch.from_numpy(many).float()[:, None] / 255).argmax(1).numpy()
    np.testing.assert_array_equal(labels, expected)
    single, probs = predict(small_model, one, return_probs=True)
    assert single.shape == (37, 45) and probs.shape == (11, 37, 45)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(predict(small_model, torch.from_numpy(many).float() / 255), labels)
    # a batch of one keeps its batch axis, however the tensor is shaped; (H, W) is one image
    floats = torch.from_numpy(many[:1]).float() / 255
    for batch_of_one in (floats, floats[:, None]):
        np.testing.assert_array_equal(predict(small_model, batch_of_one), labels[:1])
    assert predict(small_model, floats[0]).shape == (37, 45)
    colour = zoo.create_model("vgg4_dilated", in_channels=3).eval()
    rgb = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        expected = colour(rgb).argmax(1).numpy()
    np.testing.assert_array_equal(predict(colour, rgb), expected)
    np.testing.assert_array_equal(predict(colour, rgb[1]), expected[1])  # one image (C, H, W)
    with pytest.raises(
        ValueError, match=r"expected a float tensor \(N, 3, H, W\) or \(3, H, W\), found \(2, 20, 24\)"
    ):
        predict(colour, rgb[:, 0])
    for bad, message in [
        (many.astype(np.float32), "expected uint8 images"),
        (
            rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8),
            r"expected grayscale images \(H, W\) or \(N, H, W\)",
        ),
        (rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "expected grayscale images"),
        (torch.zeros(2, 3, 8, 8), r"expected a float tensor \(N, 1, H, W\)"),
        (torch.zeros(2, 8, 8, dtype=torch.uint8), "already normalised"),
    ]:
        with pytest.raises(ValueError, match=message):
            predict(small_model, bad)


def heavy(name: str) -> object:
    # a *_wide variant is its narrow twin's code with more channels: exported in the slow run
    return pytest.param(name, marks=pytest.mark.slow) if name.endswith("_wide") else name


@pytest.mark.parametrize("name", [heavy(n) for n in zoo.list_models()])
def test_torch_export_with_dynamic_size(name):
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model(name))  # a dropped BN would show
    dynamic = torch.export.Dim.DYNAMIC
    dims = {"x": {0: dynamic, 2: dynamic, 3: dynamic}}
    exported = torch.export.export(model, (torch.rand(2, 1, 64, 84),), dynamic_shapes=dims)
    # a nest of 2x2 shift-and-stitch pools exports for sizes whose halvings have the example's
    # parities (64: even, even, even; 84: even, even, odd), a U-Net for sizes its padding treats
    # like the example's (multiples of 4); every other model for any size
    aligned = "stitch" in name or name.startswith("unet")
    shapes = [(3, 1, 96, 52), (1, 1, 32, 116)] if aligned else [(3, 1, 50, 71), (1, 1, 128, 97)]
    for shape in shapes:
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-4)


# the ONNX exports of vgg4_stitch and the U-Nets take 6-10 s: in the slow run (their torch.export
# runs every time)
ONNX_EVERY_RUN = {"vgg4_dilated", "vgg4_maxpool", "resnet18_dilated"}


@pytest.mark.parametrize(
    "name, head",
    [("vgg4_dilated", "context")]
    + [
        (n, "pixel") if n in ONNX_EVERY_RUN else pytest.param(n, "pixel", marks=pytest.mark.slow)
        for n in zoo.list_models()
    ],
)
def test_onnx_matches_pytorch(tmp_path, name, head):
    # one model of each family and kind of downsampling in every run; the whole registry with -m slow
    import onnxruntime as ort

    from zoo.inference import export_onnx

    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model(name, head=head)).train()
    path = export_onnx(model, tmp_path / f"{name}_{head}.onnx")
    assert model.training, "export_onnx must hand the model back in the mode it came in"
    model.eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 64, 84), (3, 1, 96, 52)] if "stitch" in name else [(1, 1, 64, 84), (3, 1, 33, 50)]:
        x = torch.rand(shape)
        (out,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-4)
