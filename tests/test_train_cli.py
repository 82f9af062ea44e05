"""train.py end to end: results files, pruning, errors, a real kill + resume, and DDP metrics."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from zoo.training.cli import main
from zoo.training.module import SegmentationModule

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = [4, 4, 4, 4]


def tiny_args(root, *extra, epochs=2, train=16, test=8):
    return [
        "--model.arch", "vgg4_dilated", "--model.model_kwargs", json.dumps({"widths": WIDTHS}),
        "--data.data_dir", "null", "--data.batch_size", "8", "--data.train_size", str(train),
        "--data.val_size", "8", "--data.test_size", str(test),
        "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra,
    ]  # fmt: skip


def run_train(args, script=None, **kw):
    """`python train.py ARGS` (or a script) in a fresh process, from the repository root."""
    cmd = [sys.executable, str(script or ROOT / "train.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def conv_weight_count(widths, in_channels=1, classes=11):
    chans = [in_channels, *widths]
    return sum(9 * a * b for a, b in zip(chans, chans[1:])) + widths[-1] * classes


def test_fit_writes_results_json_and_png_with_pruning(tmp_path):
    assert main(["fit", *tiny_args(tmp_path, "--pruning.amount", "0.5", "--pruning.start_epoch", "0")]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["arch"] == "vgg4_dilated" and results["epochs"] == 2
    assert results["pruning"] == {"amount": 0.5, "start_epoch": 0, "per_layer": False}
    convs = conv_weight_count(WIDTHS)
    # weights + biases of 4 convs, BN weight and bias, head bias
    total = convs + sum(WIDTHS) + 2 * sum(WIDTHS) + 11
    assert results["parameters"] == total
    # global L1 pruning zeroes exactly round(0.5 * convs) convolution weights, nothing else
    assert results["nonzero_parameters"] == total - round(0.5 * convs)
    assert 0 <= results["test"]["digit_miou"] <= 1 and len(results["test"]["iou"]) == 11
    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(tmp_path / name, weights_only=True)["state_dict"]
        assert not any(k.endswith(("_orig", "_mask")) for k in state), "checkpoints hold plain weights"
    # the pruned weights were saved as zeros
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    zeros = sum(int((v == 0).sum()) for k, v in last.items() if k.endswith("conv.weight"))
    assert zeros == round(0.5 * convs)


def test_fast_dev_run_tests_the_model_and_writes_nothing(tmp_path, caplog):
    # Lightning keeps no checkpoint in a fast_dev_run, so there is no "best" to test
    assert main(["fit", *tiny_args(tmp_path, "--trainer.fast_dev_run", "1")]) == 0
    assert not (tmp_path / "results.json").exists()
    # nor does it touch a run already in the folder (Lightning 2.6 rewrote its last.ckpt)
    assert main(["fit", *tiny_args(tmp_path, epochs=1)]) == 0
    saved = {p.name: p.read_bytes() for p in tmp_path.glob("*.ckpt")}
    assert sorted(saved) == ["best.ckpt", "last.ckpt"]
    caplog.clear()
    assert main(["fit", *tiny_args(tmp_path, "--trainer.fast_dev_run", "1")]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.ckpt")} == saved
    assert "already holds a run" not in caplog.text
    # a real fit into the folder is told that it replaces the run there
    assert main(["fit", *tiny_args(tmp_path, epochs=1)]) == 0
    assert f"{tmp_path} already holds a run (best.ckpt, last.ckpt)" in caplog.text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data.data_dir", "no/such/dir"], "error: data directory no/such/dir does not exist"),
        (["--data.train_size", "0"], "error: the train split needs at least one image, found 0"),
        (["--pruning.amount", "1.5"], "error: pruning amount must be in [0, 1), found 1.5"),
        (["--model.optimizer.lr", "-1"], "error: Invalid learning rate: -1.0"),
    ],
)
def test_bad_arguments_end_in_one_line(tmp_path, capsys, extra, message):
    args = tiny_args(tmp_path)
    # later flags win: the bad value replaces the good one
    assert main(["fit", *args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(message), err[-3:]


def test_impossible_split_of_real_files(tmp_path, capsys):
    from zoo.data import generate_m2nist, save_m2nist

    images, labels = generate_m2nist(10, seed=1)
    save_m2nist(tmp_path / "data", images, labels)
    args = tiny_args(tmp_path / "run", "--data.data_dir", str(tmp_path / "data"))
    args += ["--data.val_fraction", "0.6", "--data.test_fraction", "0.5"]
    assert main(["fit", *args]) == 2
    assert "val_fraction and test_fraction" in capsys.readouterr().err


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, os.getcwd())  # the repository, as for train.py
import pytorch_lightning as pl
from zoo.training.cli import main

class KillMidEpoch(pl.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == {epoch} and batch_idx == {batch}:
            os.kill(os.getpid(), signal.SIGKILL)

sys.exit(main(sys.argv[1:], trainer_defaults={{"callbacks": [KillMidEpoch()]}}))
"""


@pytest.mark.slow  # about 30 s: two real processes, one killed
def test_killed_mid_epoch_and_resumed_matches_uninterrupted(tmp_path):
    common = ["--data.augment", "true", "--trainer.deterministic", "true", "--model.optimizer.lr", "0.01"]
    straight = run_train(["fit", *tiny_args(tmp_path / "straight", *common, epochs=3, train=24)])
    assert straight.returncode == 0, straight.stderr[-2000:]

    script = tmp_path / "killed_train.py"
    script.write_text(KILL_SCRIPT.format(epoch=1, batch=1))  # 3 batches per epoch: mid-epoch 1
    run = tiny_args(tmp_path / "killed", *common, epochs=3, train=24)
    killed = run_train(["fit", *run], script=script)
    assert killed.returncode == -9, "the run was not killed"
    assert not (tmp_path / "killed" / "results.json").exists()
    saved = torch.load(tmp_path / "killed" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0, "last.ckpt should be the end of epoch 0"

    resumed = run_train(["fit", *run, "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "already holds a run" not in resumed.stderr and "not empty" not in resumed.stderr
    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    b = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert b["epochs"] == a["epochs"] == 3
    assert b["test"] == a["test"]
    # the curves of the resumed run join its earlier log version: every epoch, same values
    assert [e for e, _ in a["history"]["val/digit_miou"]] == [0, 1, 2]
    assert b["history"] == a["history"]

    # extending the finished run's one-cycle schedule cannot work: a one-line error says what to do
    longer = run_train(
        ["fit", *tiny_args(tmp_path / "killed", *common, epochs=4, train=24), "--ckpt_path", "last"]
    )
    assert longer.returncode == 2 and "one-cycle schedule ends after 9 steps" in longer.stderr
    wa = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "killed" / "last.ckpt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # about 20 s: a two-process DDP run
def test_ddp_two_processes_metrics_equal_single_process(tmp_path):
    # one fixed checkpoint, tested on 13 images (odd: a padding sampler would count one twice)
    pl.seed_everything(3)
    module = SegmentationModule("vgg4_dilated", {"widths": WIDTHS})
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    from zoo.training.datamodules import M2NISTDataModule

    trainer.fit(
        module,
        datamodule=M2NISTDataModule(data_dir=None, batch_size=4, train_size=4, val_size=4, test_size=4),
    )
    ckpt = tmp_path / "fixed.ckpt"
    trainer.save_checkpoint(ckpt)

    scores = {}
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        root = tmp_path / f"devices{devices}"
        args = tiny_args(root, "--trainer.accelerator", "cpu", "--trainer.devices", str(devices), test=13)
        args += ["--trainer.strategy", strategy, "--data.batch_size", "3", "--ckpt_path", str(ckpt)]
        out = run_train(["test", *args])
        assert out.returncode == 0, out.stderr[-3000:]
        assert devices == 1 or "MEMBER: 2/2" in out.stdout + out.stderr, "not two processes"
        scores[devices] = json.loads((root / "test_results.json").read_text())["test"]
    assert scores[1] == scores[2]


def test_train_export_load_predict_round_trip(tmp_path):
    import numpy as np

    import zoo

    assert main(["fit", *tiny_args(tmp_path / "run", epochs=1)]) == 0
    weights, card = zoo.export(tmp_path / "run" / "best.ckpt", tmp_path / "shipped")
    info = json.loads(card.read_text())
    assert (
        info["metrics"]["digit_miou"]
        == json.loads((tmp_path / "run" / "results.json").read_text())["test"]["digit_miou"]
    )
    assert info["training"]["command"].startswith("python train.py fit")
    # a longer recipe's card keeps the shared recipe's run for the model table
    results = tmp_path / "run" / "results.json"
    _, card = zoo.export(tmp_path / "run" / "best.ckpt", tmp_path / "long", shared_recipe=results)
    shared = json.loads(card.read_text())["training"]["shared_recipe"]
    assert shared["test"] == json.loads(results.read_text())["test"] and shared["epochs"] == 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"arch": "unet"}))
    with pytest.raises(ValueError, match="is a run of unet, not of vgg4_dilated"):
        zoo.export(tmp_path / "run" / "best.ckpt", tmp_path / "long", shared_recipe=other)
    # a further stage from those shipped weights keeps the record they carry
    start = tmp_path / "long" / "vgg4_dilated.m2nist.safetensors"
    assert main(["fit", *tiny_args(tmp_path / "stage2", "--model.init_from", str(start), epochs=1)]) == 0
    _, card2 = zoo.export(tmp_path / "stage2" / "best.ckpt", tmp_path / "stage2_shipped")
    training = json.loads(card2.read_text())["training"]
    assert training["shared_recipe"] == shared and training["earlier_stages"][-1]["from"] == str(start)
    module = SegmentationModule.load_from_checkpoint(tmp_path / "run" / "best.ckpt", weights_only=True).eval()
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 84), dtype=np.uint8)
    with torch.no_grad():
        expected = module(torch.from_numpy(images).float()[:, None] / 255).argmax(1).numpy()
    for model in (zoo.load(weights), zoo.load(tmp_path / "run" / "best.ckpt")):
        np.testing.assert_array_equal(zoo.predict(model, images), expected)


LEGACY = ROOT / "tests" / "data" / "legacy_vgg4_dilated_tiny.ckpt"
# written by zoo 0.1's train.py, before optimizers were injected (hyperparameters optimizer="adamw",
# lr=0.003, weight_decay=1e-4, schedule="onecycle"):
#   python train.py fit --model.arch vgg4_dilated --model.model_kwargs '{widths: [4, 4, 4, 4]}'
#     --trainer.max_epochs 2 --data.train_size 8 --data.val_size 4 --data.test_size 4
#     --data.batch_size 4 --data.recompose true


def test_a_checkpoint_of_the_string_option_era_still_loads(tmp_path):
    import zoo

    raw = torch.load(LEGACY, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["optimizer"] == "adamw"  # the fixture is what it says
    weights = {k.removeprefix("model."): v for k, v in raw["state_dict"].items()}

    model = zoo.load(LEGACY)
    assert model.arch == "vgg4_dilated" and model.model_kwargs["widths"] == WIDTHS
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k

    module = SegmentationModule.load_from_checkpoint(LEGACY)
    opt = module.optimizer_factory(module.model.parameters())
    (group,) = opt.param_groups  # zoo 0.1's adamw: lr 0.003 (its default), weight decay 1e-4
    assert type(opt) is torch.optim.AdamW and (group["lr"], group["weight_decay"]) == (0.003, 1e-4)
    schedule = module.scheduler_factory(opt, total_steps=10)
    assert type(schedule) is torch.optim.lr_scheduler.OneCycleLR and group["lr"] == pytest.approx(0.003 / 25)
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, weights[k]), k

    _, card = zoo.export(LEGACY, tmp_path / "shipped")
    assert json.loads(card.read_text())["training"]["hyperparameters"]["optimizer"] == "adamw"


def test_train_py_tests_and_resumes_a_string_option_checkpoint(tmp_path):
    config = ["--config", str(ROOT / "configs" / "shared.yaml"), "--model.arch", "vgg4_dilated"]
    without_ckpt = [
        "--model.model_kwargs", json.dumps({"widths": WIDTHS}), "--data.data_dir", "null",
        "--data.batch_size", "4",
        "--data.train_size", "8", "--data.val_size", "4", "--data.test_size", "4", "--data.recompose", "true",
        "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    legacy_run = [*without_ckpt, "--ckpt_path", str(LEGACY)]
    assert main(["test", *config, *legacy_run, "--trainer.default_root_dir", str(tmp_path / "test")]) == 0
    tested = json.loads((tmp_path / "test" / "test_results.json").read_text())
    assert tested["test"]["digit_miou"] >= 0 and tested["tested"] == str(LEGACY)
    # the results name what was scored: init_from's weights, or a model as it was built
    runs = {
        "init": (["--model.init_from", str(LEGACY)], str(LEGACY)),
        "fresh": ([], "a freshly initialised model"),
    }
    for name, (extra, expected) in runs.items():
        out = tmp_path / name
        assert main(["test", *config, *without_ckpt, *extra, "--trainer.default_root_dir", str(out)]) == 0
        assert json.loads((out / "test_results.json").read_text())["tested"] == expected
    # the finished run resumes with today's optimizer and one-cycle configuration: states load;
    # the best checkpoint it records lived in the folder that wrote it (/tmp/legacy), which is not
    # on this machine, so the fit's own final weights are tested and results.json says so
    assert not Path("/tmp/legacy/best.ckpt").exists(), (
        "a leftover /tmp/legacy/best.ckpt hides what this checks"
    )
    assert main(["fit", *config, *legacy_run, "--trainer.default_root_dir", str(tmp_path / "fit")]) == 0
    results = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert (
        results["best_checkpoint"] == "/tmp/legacy/best.ckpt"
        and results["tested"] == "the fit's final weights"
    )
