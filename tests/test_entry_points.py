"""Command lines and switches that users reach directly, against hand-derived values or a second reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_batchnorm
from safetensors.numpy import load_file

import zoo
from zoo.__main__ import main as zoo_main
from zoo.data.datasets import RecomposedM2NIST
from zoo.data.glyphs import GLYPH, glyph_pools
from zoo.training.losses import dice_loss

ROOT = Path(__file__).resolve().parent.parent


def test_models_command_lists_by_pattern_and_shipped_weights(capsys):
    assert zoo_main(["models", "vgg4_*_wide"]) == 0
    assert capsys.readouterr().out.split() == [
        "vgg4_dilated_wide",
        "vgg4_large_kernel_wide",
        "vgg4_strided_wide",
    ]
    assert zoo_main(["models", "--pretrained"]) == 0
    # the second reference: the weight files in checkpoints/
    shipped = sorted({p.name.split(".")[0] for p in (ROOT / "checkpoints").glob("*.safetensors")})
    assert capsys.readouterr().out.split() == shipped
    assert zoo_main(["models", "unet*"]) == 0
    assert capsys.readouterr().out.split() == ["unet", "unet_small"]


def test_export_command_writes_the_checkpoints_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model("vgg4_dilated", widths=[4, 6, 8, 8]))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    hparams = {"arch": "vgg4_dilated", "model_kwargs": {"widths": [4, 6, 8, 8]}}
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 1}, ckpt)
    assert zoo_main(["export", str(ckpt), str(tmp_path / "out"), "--tag", "mine"]) == 0
    assert "wrote" in capsys.readouterr().out
    # read back with safetensors itself, not through the zoo
    written = load_file(tmp_path / "out" / "vgg4_dilated.mine.safetensors")
    expected = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert set(expected) <= set(written)
    for k, v in expected.items():
        np.testing.assert_array_equal(written[k], v.numpy(), err_msg=k)
    assert zoo_main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_rf_command_prints_the_hand_derived_field(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "zoo.rf", "vgg4_dilated", "--samples", "2", "--inits", "1",
         "--plot", str(tmp_path / "e.png")],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = run.stdout.splitlines()
    # dilations 1, 2, 4, 8 of 3x3 kernels: 3, 3 + 4, 7 + 8, 15 + 16
    fields = [int(line.split()[-1]) for line in lines if line.startswith(("features.", "head."))]
    assert fields == [3, 7, 15, 31, 31]
    assert "receptive field 31" in lines
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, "-m", "zoo.rf", "vgg5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown model" in bad.stderr


def test_unet_with_transposed_upsampling():
    # per level, bilinear + 1x1 conv (c_in*c_out + c_out) becomes a 2x2 stride-2 transposed conv
    # (4*c_in*c_out + c_out): 3*c_in*c_out more parameters
    bilinear = zoo.create_model("unet_small")
    transpose = zoo.create_model("unet_small", up="transpose")
    ups = [m for m in transpose.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert ups and all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in ups)
    extra = sum(3 * m.in_channels * m.out_channels for m in ups)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(transpose) - count(bilinear) == extra
    random_batchnorm(transpose)
    for shape in [(2, 1, 64, 84), (1, 1, 37, 51)]:  # any size, output at the input's
        x = torch.rand(shape)
        out = transpose(x)
        assert out.shape == (shape[0], 11, *shape[2:])
        with torch.no_grad():
            torch.testing.assert_close(transpose(x), out.detach(), rtol=1e-4, atol=1e-4)  # fused == modules


def ink_box(image: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(image)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


@pytest.mark.parametrize("counts, glyphs", [((1.0, 0.0, 0.0), 1), ((0.0, 0.0, 1.0), 3)])
def test_recompose_counts_set_the_glyphs_per_image(counts, glyphs):
    pool, digits = glyph_pools(seed=0)["train"]
    ds = RecomposedM2NIST(pool, digits, size=60, layout="scatter", count_probs=counts, seed=3)
    boxes = [ink_box((ds[i, 1][0][0].numpy() * 255).round()) for i in range(len(ds))]
    fits = [h <= GLYPH and w <= GLYPH for h, w in boxes]
    if glyphs == 1:
        assert all(fits)  # one glyph's ink always fits its 28x28 box
    else:  # three glyphs anywhere on 64x84 nearly never fit one 28x28 box
        assert sum(fits) <= 3


def test_dice_loss_by_hand():
    # equal logits: p = 1/2 everywhere; 4 pixels of class 0, eps = 1.
    # class 0: (2*2 + 1) / (2 + 4 + 1) = 5/7; class 1: (0 + 1) / (2 + 0 + 1) = 1/3
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    assert dice_loss(logits, target).item() == pytest.approx(1 - (5 / 7 + 1 / 3) / 2)
    # a third class neither present nor predicted (p = 0) counts as a perfect match, (0 + 1) / (0 + 1)
    logits3 = torch.cat([logits, torch.full((1, 1, 2, 2), -torch.inf)], dim=1)
    assert dice_loss(logits3, target).item() == pytest.approx(1 - (5 / 7 + 1 / 3 + 1) / 3)


def one_step(tmp_path, **switches) -> torch.nn.Module:
    """The model after one training step of a seeded tiny run with the module's `switches`."""
    import pytorch_lightning as pl

    from zoo.training.datamodules import M2NISTDataModule
    from zoo.training.module import SegmentationModule

    pl.seed_everything(0)
    # SGD, not AdamW: a conv bias before BN has a zero gradient up to rounding, which Adam's
    # normalisation would blow up to a full step of either sign
    module = SegmentationModule(
        "vgg4_dilated",
        {"widths": [4, 4, 4, 4]},
        optimizer=lambda params: torch.optim.SGD(params, lr=3e-3, momentum=0.9),
        lr_scheduler=None,
        **switches,
    )
    data = M2NISTDataModule(data_dir=None, batch_size=8, train_size=8, val_size=8, test_size=8)
    trainer = pl.Trainer(
        fast_dev_run=1, default_root_dir=tmp_path, enable_progress_bar=False, precision="32-true"
    )
    trainer.fit(module, datamodule=data)
    return module.model


def test_channels_last_switch_changes_the_layout_not_the_step(tmp_path):
    nhwc, nchw = one_step(tmp_path, channels_last=True), one_step(tmp_path, channels_last=False)
    for a, b in zip(nhwc.modules(), nchw.modules()):
        if isinstance(a, torch.nn.Conv2d) and a.kernel_size != (1, 1) and a.in_channels > 1:  # else both
            assert a.weight.is_contiguous(memory_format=torch.channels_last)
            assert b.weight.is_contiguous() and not b.weight.is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip(nhwc.named_parameters(), nchw.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_compile_switch_gives_the_eager_step(tmp_path):
    compiled = one_step(tmp_path, compile=True)
    assert type(compiled).__name__ == "OptimizedModule"
    eager = one_step(tmp_path)
    for (name, a), b in zip(compiled._orig_mod.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
