"""Training: metrics against hand counts, a tiny end-to-end fit, checkpoints, the CLI's configs."""

import functools
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import cli_for
from pytorch_lightning.callbacks import ModelCheckpoint

import zoo
from zoo.training.datamodules import M2NISTDataModule
from zoo.training.losses import median_frequency_weights
from zoo.training.metrics import SegmentationMetrics, scores_from_confusion
from zoo.training.module import SegmentationModule

ROOT = Path(__file__).resolve().parent.parent


def test_metrics_against_hand_counts():
    # 3 classes, background = 2. Truth and prediction over 10 pixels:
    truth = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2, 2, 0])
    # class 0: TP 2, FP 1 (last pixel), FN 1 -> IoU 2/4
    # class 1: TP 1, FP 1, FN 1 -> IoU 1/3
    # class 2: TP 4, FP 1, FN 1 -> IoU 4/6
    m = SegmentationMetrics(num_classes=3, background=2)
    m.update(preds[:4], truth[:4])  # two updates: one matrix over the whole split
    m.update(preds[4:], truth[4:])
    s = m.compute()
    torch.testing.assert_close(s["iou"], torch.tensor([0.5, 1 / 3, 4 / 6], dtype=torch.float64))
    assert s["pixel_acc"].item() == pytest.approx(7 / 10)
    assert s["miou"].item() == pytest.approx((0.5 + 1 / 3 + 4 / 6) / 3)
    assert s["digit_miou"].item() == pytest.approx((0.5 + 1 / 3) / 2)


def test_whole_split_is_not_a_mean_of_images():
    # image A: class 0 perfect on 1 pixel; image B: class 0 found on 1 of 9 pixels
    conf = torch.zeros(2, 2)
    conf[0, 0] = 1 + 1
    conf[0, 1] = 8
    conf[1, 1] = 10
    assert scores_from_confusion(conf, background=1)["iou"][0].item() == pytest.approx(2 / 10)


def test_absent_class_is_left_out_of_means():
    conf = torch.tensor([[3.0, 0, 0], [0, 0, 0], [0, 0, 5]])
    s = scores_from_confusion(conf, background=2)
    assert torch.isnan(s["iou"][1]) and s["digit_miou"].item() == 1.0


def test_median_frequency_weights():
    labels = torch.tensor([0] * 1 + [1] * 3 + [2] * 6)  # freq .1 .3 .6, median .3
    torch.testing.assert_close(median_frequency_weights(labels, 4), torch.tensor([3.0, 1.0, 0.5, 0.0]))


def tiny_data(**kw):
    return M2NISTDataModule(data_dir=None, batch_size=8, train_size=16, val_size=8, test_size=8, **kw)


SGD = functools.partial(torch.optim.SGD, lr=3e-3, momentum=0.9, nesterov=True)


@pytest.mark.parametrize(
    "loss, weights, optimizer", [("ce", None, None), ("ce+dice", "median_frequency", SGD)]
)
def test_fit_test_and_reload(tmp_path, loss, weights, optimizer):
    pl.seed_everything(0)
    chosen = {} if optimizer is None else {"optimizer": optimizer}
    module = SegmentationModule(
        "vgg4_dilated", {"widths": [8, 8, 8, 8]}, loss=loss, class_weights=weights, **chosen
    )
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)],
    )
    data = tiny_data()
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    trainer.test(module, datamodule=data)
    scores = module.test_scores
    assert set(scores) == {"pixel_acc", "iou", "miou", "digit_miou", "classes"} and len(scores["iou"]) == 11
    assert scores["classes"] == [str(d) for d in range(10)] + ["background"]

    ckpt = tmp_path / "last.ckpt"
    reloaded = SegmentationModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    assert reloaded.hparams.arch == "vgg4_dilated" and reloaded.hparams.loss == loss
    x = torch.rand(2, 1, 64, 84)
    module.eval()
    torch.testing.assert_close(reloaded(x), module(x))


class _WeightsAtTrainStart(pl.Callback):
    def on_train_start(self, trainer, module):
        self.state = {k: v.clone() for k, v in module.model.state_dict().items()}


def test_init_from_starts_the_fit_from_given_weights(tmp_path):
    source = zoo.create_model("vgg4_dilated", widths=[8, 8, 8, 8])
    with torch.no_grad():
        for t in source.state_dict().values():
            if t.is_floating_point():
                t.uniform_(-1, 1)  # unlike any fresh initialisation
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    seen = _WeightsAtTrainStart()
    module = SegmentationModule("vgg4_dilated", {"widths": [8, 8, 8, 8]}, init_from=str(path))
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, callbacks=[seen], default_root_dir=tmp_path
    )
    trainer.fit(module, datamodule=tiny_data())
    expected = source.state_dict()
    assert seen.state.keys() == expected.keys()
    assert all(torch.equal(seen.state[k], expected[k]) for k in expected)

    other = SegmentationModule("vgg4_dilated", {"widths": [8, 8, 8, 16]}, init_from=str(path))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"weights\.pt.*shape"):
        trainer.fit(other, datamodule=tiny_data())


class _WeightsAtEvalStart(pl.Callback):
    def on_validation_start(self, trainer, module):
        self.state = {k: v.clone() for k, v in module.model.state_dict().items()}

    on_test_start = on_validation_start


def test_init_from_is_what_validate_and_test_score_and_a_fit_tests_what_it_trained(tmp_path):
    source = zoo.create_model("vgg4_dilated", widths=[8, 8, 8, 8])
    with torch.no_grad():
        for t in source.state_dict().values():
            if t.is_floating_point():
                t.uniform_(-1, 1)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    expected = source.state_dict()
    for run in ("validate", "test"):  # no --ckpt_path: init_from's weights, not a fresh model's
        seen = _WeightsAtEvalStart()
        module = SegmentationModule("vgg4_dilated", {"widths": [8, 8, 8, 8]}, init_from=str(path))
        trainer = pl.Trainer(
            logger=False, enable_progress_bar=False, callbacks=[seen], default_root_dir=tmp_path
        )
        getattr(trainer, run)(module, datamodule=tiny_data())
        assert all(torch.equal(seen.state[k], expected[k]) for k in expected), run
    # a fit then a test of the same module: the test sees the trained weights, not init_from again
    module = SegmentationModule("vgg4_dilated", {"widths": [8, 8, 8, 8]}, init_from=str(path))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=tiny_data())
    trained = {k: v.clone() for k, v in module.model.state_dict().items()}
    assert not all(torch.equal(trained[k], expected[k]) for k in expected)
    seen = _WeightsAtEvalStart()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, callbacks=[seen], default_root_dir=tmp_path)
    trainer.test(module, datamodule=tiny_data())
    assert all(torch.equal(seen.state[k], trained[k]) for k in trained)


def test_init_parts_features_takes_only_the_backbone(tmp_path):
    from zoo.checkpoint import save_shipped

    kwargs = {"widths": [8, 8, 8, 8]}
    source = zoo.create_model("vgg4_dilated", **kwargs)  # a pixel head; the new model has a context head
    with torch.no_grad():
        for t in source.state_dict().values():
            if t.is_floating_point():
                t.uniform_(-1, 1)
    weights, _ = save_shipped(source, tmp_path, "vgg4_dilated", kwargs, {})
    seen = _WeightsAtTrainStart()
    module = SegmentationModule(
        "vgg4_dilated", {**kwargs, "head": "context"}, init_from=str(weights), init_parts="features"
    )
    fresh_head = {k: v.clone() for k, v in module.model.state_dict().items() if k.startswith("head.")}
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, callbacks=[seen], default_root_dir=tmp_path
    )
    trainer.fit(module, datamodule=tiny_data())
    for k, v in source.state_dict().items():
        if k.startswith("features."):
            assert torch.equal(seen.state[k], v), k
    assert all(torch.equal(seen.state[k], v) for k, v in fresh_head.items())

    wider = SegmentationModule(
        "vgg4_dilated", {"widths": [8, 8, 8, 16]}, init_from=str(weights), init_parts="features"
    )
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"safetensors \(features\).*shape"):
        trainer.fit(wider, datamodule=tiny_data())
    with pytest.raises(ValueError, match="init_parts must be one of"):
        SegmentationModule(init_parts="head")


def test_freeze_features_trains_only_the_head(tmp_path):
    from zoo.checkpoint import save_shipped

    kwargs = {"widths": [8, 8, 8, 8], "head": "context"}
    source = zoo.create_model("vgg4_dilated", **kwargs)
    with torch.no_grad():
        for t in source.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.1, 1)  # unlike any fresh initialisation; positive variances
    weights, _ = save_shipped(source, tmp_path, "vgg4_dilated", kwargs, {})
    module = SegmentationModule("vgg4_dilated", kwargs, init_from=str(weights), freeze="features")
    trainer = pl.Trainer(max_steps=3, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=tiny_data())
    before, after = source.state_dict(), module.model.state_dict()
    # the backbone's weights and batch-norm statistics as loaded; the head's trained
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("features."))
    assert not torch.equal(after["head.mix.conv.weight"], before["head.mix.conv.weight"])
    assert not torch.equal(after["head.mix.bn.running_mean"], before["head.mix.bn.running_mean"])
    (group,) = trainer.optimizers[0].param_groups
    assert {id(p) for p in group["params"]} == {id(p) for p in module.model.head.parameters()}
    with pytest.raises(ValueError, match="freeze must be one of"):
        SegmentationModule(freeze="head")


def test_a_one_cycle_left_without_a_length_runs_over_the_whole_fit():
    from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

    from zoo.training.module import OneCycle, build_scheduler

    def optimizer():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.02)

    # LightningCLI hands the module partials of the configured class
    assert build_scheduler(functools.partial(OneCycleLR, max_lr=0.1), optimizer(), 40).total_steps == 40
    assert (
        build_scheduler(functools.partial(OneCycleLR, max_lr=0.1, total_steps=7), optimizer(), 40).total_steps
        == 7
    )
    cosine = build_scheduler(functools.partial(CosineAnnealingLR, T_max=9), optimizer(), 40)
    assert isinstance(cosine, CosineAnnealingLR) and cosine.T_max == 9
    default = build_scheduler(OneCycle, optimizer(), 40)
    # one-cycle starts at peak / 25 and peaks at the optimizer's lr at step 0.15 * 40 - 1 = 5
    assert default.total_steps == 40 and default.optimizer.param_groups[0]["lr"] == pytest.approx(0.02 / 25)
    for _ in range(5):
        default.optimizer.step()
        default.step()
    assert default.optimizer.param_groups[0]["lr"] == pytest.approx(0.02)


class NonFiniteAt(SegmentationModule):
    """The loss turns NaN at one step (NaN class weights) while the forward pass stays clean."""

    bad_step = 5

    def training_step(self, batch, batch_idx):
        if self.global_step == self.bad_step:
            self.before = {k: v.detach().clone() for k, v in self.model.named_parameters()}
            self.class_weight = torch.full((11,), float("nan"))
        return super().training_step(batch, batch_idx)


def test_non_finite_loss_stops_and_keeps_the_weights_before_the_bad_step(tmp_path):
    import json

    from zoo.training.module import NonFiniteLossError

    pl.seed_everything(0)
    module = NonFiniteAt("vgg4_dilated", {"widths": [4, 4, 4, 4]}, lr_scheduler=None)
    last = ModelCheckpoint(dirpath=tmp_path, filename="best", save_last=True)
    trainer = pl.Trainer(
        max_epochs=5, default_root_dir=tmp_path, logger=False, enable_progress_bar=False, callbacks=[last]
    )
    # 16 images, batch 8: two steps an epoch, so step 5 is the second step of epoch 2
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 2, step 5"):
        trainer.fit(module, datamodule=tiny_data())
    stopped = json.loads((tmp_path / "stopped.json").read_text())
    assert (stopped["epoch"], stopped["step"]) == (2, 5)
    kept = dict(zoo.load(stopped["weights"]).named_parameters())
    assert kept.keys() == module.before.keys()
    for k, v in module.before.items():  # the weights; BN statistics have also seen the last batch
        assert torch.equal(kept[k], v), k
    # the epoch checkpoint stays too: end of epoch 1, one step before the kept weights
    assert Path(stopped["last"]) == tmp_path / "last.ckpt"
    epoch_end = dict(zoo.load(tmp_path / "last.ckpt").named_parameters())
    assert not all(torch.equal(epoch_end[k], v) for k, v in kept.items())


def test_diverged_weights_are_not_kept(tmp_path):
    import json

    from zoo.training.module import NONFINITE_CHECKPOINT, NonFiniteLossError

    module = SegmentationModule(
        "vgg4_dilated", {"widths": [4, 4, 4, 4]}, optimizer=functools.partial(SGD, lr=1e30), lr_scheduler=None
    )
    trainer = pl.Trainer(max_epochs=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(NonFiniteLossError, match="the weights are no longer finite"):
        trainer.fit(module, datamodule=tiny_data())
    assert not (tmp_path / NONFINITE_CHECKPOINT).exists()
    assert json.loads((tmp_path / "stopped.json").read_text())["weights"] is None


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        SegmentationModule("vgg4_dilatd")
    with pytest.raises(ValueError, match="loss"):
        SegmentationModule(loss="focal")
    with pytest.raises(ValueError, match="class_weights needs 11"):
        SegmentationModule(class_weights=[1.0, 2.0])


CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# the recipes of the `.scatter` weights, kept beside the m2nist-layout ones
SCATTER_CONFIGS = sorted((ROOT / "configs" / "scatter").glob("*.yaml"))


@pytest.mark.parametrize("arch", zoo.list_models())
def test_the_shared_recipe_trains_every_model_on_equal_terms(arch):
    # the model table's rows compare architectures on equal terms: one config, only the arch differs
    cli = cli_for(["--config", str(ROOT / "configs" / "shared.yaml"), "--model.arch", arch])
    assert cli.model.hparams.arch == arch and cli.trainer.max_epochs == 6
    model = cli.config.model
    assert model.optimizer.init_args.lr == 0.02  # written in the packaged recipe, not in shared.yaml
    assert model.lr_scheduler.class_path == "zoo.training.module.OneCycle"
    assert cli.datamodule.hparams.recompose and not cli.datamodule.hparams.augment
    assert cli.trainer.default_root_dir == f"checkpoints/runs/{arch}"


def test_no_config_runs_the_packaged_recipe_and_flags_override_it():
    cli = cli_for([])
    assert cli.model.hparams.arch == "vgg7_dilated" and cli.config.model.optimizer.init_args.lr == 0.02
    from zoo.training.cli import default_precision

    # 12 epochs; 6 where training runs in fp32 (default_fp32.yaml follows the recipe)
    assert cli.trainer.max_epochs == (6 if default_precision() == "32-true" else 12)
    cli = cli_for(["--trainer.max_epochs", "3", "--model.arch", "unet"])
    assert cli.trainer.max_epochs == 3 and cli.model.hparams.arch == "unet"


@pytest.mark.parametrize(
    "config",
    CONFIGS + SCATTER_CONFIGS,
    ids=[p.stem for p in CONFIGS] + [f"scatter/{p.stem}" for p in SCATTER_CONFIGS],
)
def test_config_parses_and_instantiates(config):
    cli = cli_for(["--config", str(config)])
    arch = cli.model.hparams.arch
    assert zoo.is_model(arch)
    scatter = config.parent.name == "scatter"
    assert cli.datamodule.hparams.layout == ("scatter" if scatter else "m2nist")
    runs, tag = ("checkpoints/runs/scatter", "scatter") if scatter else ("checkpoints/runs", "m2nist")
    # a second stage, or another recipe (_glyphs: from tools/glyph_classifier.py's backbone;
    # _long: the shared recipe trained longer, with augmentation, into its own run folder)
    stage = re.search(r"_stage(\d)$", config.stem)
    base = config.stem.removesuffix(stage[0]) if stage else config.stem  # vgg4_dilated_context_long
    assert re.sub(r"_glyphs$|_long$", "", base) in (arch, "default", "shared")
    if "_long" in config.stem:
        assert cli.trainer.default_root_dir == f"checkpoints/runs/{config.stem}"
    if cli.model.hparams.init_parts == "features":  # a new head on another model's features
        start = cli.model.hparams.init_from
        if config.stem.endswith("_glyphs"):
            # written by `tools/glyph_classifier.py --out checkpoints/runs/glyphs`
            assert start.startswith("checkpoints/runs/glyphs/") and start.endswith(".glyphs.safetensors")
        else:  # shipped weights of the same layout
            assert start.startswith("checkpoints/") and start.endswith(f".{tag}.safetensors")
            assert (ROOT / start).is_file()
    if stage:  # starts from the stage before's best checkpoint
        before = base if stage[1] == "2" else f"{base}_stage{int(stage[1]) - 1}"
        assert cli.model.hparams.init_from == f"{runs}/{before}/best.ckpt"
        assert (config.parent / f"{before}.yaml").is_file()
    assert isinstance(cli.model.model, zoo.ZooModel)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    CONFIGS + SCATTER_CONFIGS,
    ids=[p.stem for p in CONFIGS] + [f"scatter/{p.stem}" for p in SCATTER_CONFIGS],
)
def test_every_config_runs_a_training_step(config, tmp_path):
    from zoo.training.cli import main

    tiny = [
        "--data.train_size",
        "8",
        "--data.val_size",
        "4",
        "--data.test_size",
        "4",
        "--data.batch_size",
        "4",
    ]
    args = ["fit", "--config", str(config), *tiny, "--trainer.fast_dev_run", "1", "--model.init_from", "null"]
    assert (
        main([*args, "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"])
        == 0
    )


def test_cli_unknown_model_is_one_line_error(capsys):
    from zoo.training.cli import main

    assert main(["fit", "--model.arch", "vgg4_dilatd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown model 'vgg4_dilatd'") and "vgg4_dilated" in err[-1]


class ConvWeights(pl.Callback):
    """Copies every convolution weight when an epoch starts (placed before or after the pruning)."""

    def __init__(self):
        self.seen = {}

    def on_train_epoch_start(self, trainer, pl_module):
        convs = [m for m in pl_module.model.modules() if isinstance(m, torch.nn.Conv2d)]
        self.seen[trainer.current_epoch] = [m.weight.detach().clone() for m in convs]


def smallest(weights: list[torch.Tensor], amount: float, per_layer: bool) -> list[torch.Tensor]:
    """The pruning mask by hand: True for the round(amount * n) smallest magnitudes, sorted."""
    groups = [[w] for w in weights] if per_layer else [weights]
    masks = []
    for group in groups:
        flat = torch.cat([w.flatten().abs() for w in group])
        order = sorted(range(len(flat)), key=lambda i: float(flat[i]))
        chosen = torch.zeros(len(flat), dtype=torch.bool)
        chosen[order[: round(amount * len(flat))]] = True
        for w, part in zip(group, chosen.split([w.numel() for w in group])):
            masks.append(part.reshape(w.shape))
    return masks


@pytest.mark.parametrize("per_layer", [False, True])
def test_pruning_waits_for_its_epoch_then_zeroes_the_smallest_weights(tmp_path, per_layer):
    from zoo.training.callbacks import MagnitudePruning

    pl.seed_everything(0)
    before, after = ConvWeights(), ConvWeights()
    pruning = MagnitudePruning(amount=0.4, start_epoch=2, per_layer=per_layer)
    trainer = pl.Trainer(
        max_epochs=3,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[before, pruning, after],
    )
    module = SegmentationModule("vgg4_dilated", {"widths": [4, 4, 4, 4]})
    trainer.fit(module, datamodule=tiny_data())
    for epoch in (0, 1):  # nothing pruned before the start epoch
        assert all(
            torch.equal(a, b) and (a != 0).all() for a, b in zip(before.seen[epoch], after.seen[epoch])
        )
    expected = smallest(before.seen[2], 0.4, per_layer)
    for w, mask in zip(after.seen[2], expected):
        assert torch.equal(w == 0, mask)
    # training went on with the mask: the pruned weights are still zero at the end
    convs = [m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv, mask in zip(convs, expected):
        assert (conv.weight[mask] == 0).all() and (conv.weight[~mask] != 0).all()
