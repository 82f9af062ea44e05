"""The developer tools in tools/ that produce training inputs."""

import importlib.util
from pathlib import Path

import torch

import zoo
from zoo.checkpoint import _earlier_stages, load_state_checked

ROOT = Path(__file__).resolve().parent.parent


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_glyph_classifier_writes_a_starting_point_for_segmentation(tmp_path, capsys):
    tool = load_tool("glyph_classifier")
    argv = ["--model", "vgg4_dilated", "--epochs", "1", "--out", str(tmp_path)]
    assert tool.main(argv) == 0
    assert "test glyphs" in capsys.readouterr().out
    weights = tmp_path / "vgg4_dilated.glyphs.safetensors"
    classifier = zoo.load(weights)
    assert classifier(torch.rand(3, 1, 40, 40)).shape == (3, 10)  # one score per digit, no pixels

    # the segmentation model takes the backbone as it is (what init_parts="features" does)
    seg = zoo.create_model("vgg4_dilated")
    load_state_checked(seg.features, classifier.features.state_dict(), str(weights))
    for name, tensor in seg.features.state_dict().items():
        assert torch.equal(tensor, classifier.features.state_dict()[name])

    (stage,) = _earlier_stages(str(weights))  # and a card built on it lists this stage
    assert stage["epochs"] == 1 and stage["command"].startswith("python tools/glyph_classifier.py --model")
    assert 0 <= stage["test"]["test_glyph_acc"] <= 1
