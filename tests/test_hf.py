"""The Hugging Face Hub layout, offline with local directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_batchnorm
from safetensors.numpy import load_file

import zoo
from zoo.__main__ import main as zoo_main

ROOT = Path(__file__).resolve().parent.parent


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model("vgg4_stitch", widths=[4, 6, 8, 8], num_classes=5))
    zoo.save_pretrained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == "vgg4_stitch" and config["model_kwargs"] == {
        "widths": [4, 6, 8, 8],
        "num_classes": 5,
    }
    written = load_file(tmp_path / "model.safetensors")  # read with safetensors itself
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(written[k], v.numpy(), err_msg=k)
    again = zoo.from_pretrained(tmp_path)
    assert type(again) is type(model) and not again.training
    x = torch.rand(2, 1, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_shipped_weights_carry_their_card(tmp_path):
    assert zoo_main(["export", "vgg4_dilated", str(tmp_path), "--format", "hub"]) == 0
    card = json.loads((ROOT / "checkpoints" / "vgg4_dilated.m2nist.json").read_text())
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("---\n") and "library_name: fullres-zoo" in readme
    assert f"Digit mean IoU {card['metrics']['digit_miou']:.4f}" in readme
    assert json.loads((tmp_path / "config.json").read_text())["metrics"] == card["metrics"]
    model = zoo.from_pretrained(tmp_path)
    shipped = load_file(ROOT / "checkpoints" / "vgg4_dilated.m2nist.safetensors")
    for k, v in shipped.items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v, err_msg=k)


def test_export_command_writes_the_hub_layout_from_a_checkpoint(tmp_path):
    model = random_batchnorm(zoo.create_model("vgg4_dilated", widths=[4, 4, 4, 4]))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    hparams = {"arch": "vgg4_dilated", "model_kwargs": {"widths": [4, 4, 4, 4]}}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 0}, tmp_path / "run.ckpt")
    assert zoo_main(["export", str(tmp_path / "run.ckpt"), str(tmp_path / "hub"), "--format", "hub"]) == 0
    again = zoo.from_pretrained(tmp_path / "hub")
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_loading_errors_say_what_is_wrong(tmp_path):
    model = zoo.create_model("vgg4_dilated")
    zoo.save_pretrained(model, tmp_path / "ok")
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    config["model_kwargs"] = {"widths": [8, 8, 8, 8]}  # weights of another shape
    (tmp_path / "ok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        zoo.from_pretrained(tmp_path / "ok")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        zoo.from_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a local directory nor a Hub repository"):
        zoo.from_pretrained("someone/no-such-zoo-model", local_files_only=True)
    with pytest.raises(ValueError, match="records arch and model_kwargs"):
        zoo.save_pretrained(torch.nn.Conv2d(1, 2, 3), tmp_path / "plain")
