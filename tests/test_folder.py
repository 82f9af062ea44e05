"""Your own folders of images and masks: layouts, mask values, void labels, sizes, errors, and
the whole path through train.py, zoo.load and zoo.predict. The folders are written by the tests."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli_for
from PIL import Image

import zoo
from zoo.data.folder import FolderDataError, MaskValues, random_crop
from zoo.training.datamodules import FolderSegmentation, M2NISTDataModule
from zoo.training.losses import IGNORE_INDEX, segmentation_loss
from zoo.training.metrics import SegmentationMetrics

ROOT = Path(__file__).resolve().parents[1]


def write_pair(
    images: Path, masks: Path, stem: str, image: np.ndarray, mask: np.ndarray, suffix=".png"
) -> None:
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(images / f"{stem}.npy", image)
    else:
        Image.fromarray(image).save(images / f"{stem}{suffix}")
    Image.fromarray(mask.astype(np.uint8)).save(masks / f"{stem}.png")


def blobs(rng, h: int, w: int, classes: int, rgb: bool, values=None) -> tuple[np.ndarray, np.ndarray]:
    """An image with one bright square per class and its mask (stored values `values`, default 0..C-1)."""
    values = list(range(classes)) if values is None else values
    mask = np.full((h, w), values[0], np.uint8)
    image = rng.integers(0, 40, (h, w, 3) if rgb else (h, w)).astype(np.uint8)
    for c in range(1, classes):
        y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
        mask[y : y + 6, x : x + 6] = values[c]
        if rgb:
            image[y : y + 6, x : x + 6, c % 3] = 120 + 30 * c
        else:
            image[y : y + 6, x : x + 6] = 100 + 40 * c
    return image, mask


def make_folder(
    root: Path, n: int = 10, classes: int = 3, rgb: bool = False, sizes=((24, 32),), values=None
) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        image, mask = blobs(rng, h, w, classes, rgb, values)
        write_pair(root / "images", root / "masks", f"img{i:02d}", image, mask)
    return root


def test_images_masks_layout_splits_by_seed_and_replays_from_the_split_file(tmp_path):
    root = make_folder(tmp_path / "data", n=10)
    a = FolderSegmentation(str(root), crop_size=16, val_fraction=0.2, test_fraction=0.2, seed=3)
    b = FolderSegmentation(str(root), crop_size=16, val_fraction=0.2, test_fraction=0.2, seed=3)
    stems = {s: [img.stem for img, _ in p] for s, p in a.pairs.items()}
    assert {s: len(v) for s, v in stems.items()} == {"train": 6, "val": 2, "test": 2}
    assert stems == {s: [img.stem for img, _ in p] for s, p in b.pairs.items()}  # seeded
    assert sorted(sum(stems.values(), [])) == [f"img{i:02d}" for i in range(10)]  # each image once
    assert "images + " in a.source and "3 classes" in a.source and "grayscale" in a.source
    from zoo.data.folder import write_split_file

    split_file = write_split_file(a.pairs, tmp_path / "splits.json")
    c = FolderSegmentation(str(root), crop_size=16, seed=99, split_file=str(split_file))
    assert {s: [img.stem for img, _ in p] for s, p in c.pairs.items()} == stems
    with pytest.raises(FolderDataError, match="cannot read the split file .*missing.json"):
        FolderSegmentation(str(root), split_file=str(tmp_path / "missing.json"))


def test_per_split_folders_and_explicit_folders(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            image, mask = blobs(rng, 20, 20, 2, rgb=False)
            write_pair(
                tmp_path / "a" / split / "images",
                tmp_path / "a" / split / "masks",
                f"{split}{i}",
                image,
                mask,
            )
            # CamVid's layout: train/ + trainannot/
            write_pair(tmp_path / "b" / split, tmp_path / "b" / f"{split}annot", f"{split}{i}", image, mask)
    a = FolderSegmentation(str(tmp_path / "a"), crop_size=16)
    assert {s: len(p) for s, p in a.pairs.items()} == {"train": 4, "val": 2, "test": 2}
    assert "{train,val,test}" in a.source
    b_dirs = {
        f"{s}_{k}": str(tmp_path / "b" / (s if k == "images" else f"{s}annot"))
        for s in ("train", "val", "test")
        for k in ("images", "masks")
    }
    b = FolderSegmentation(None, crop_size=16, **b_dirs)
    assert [img.stem for img, _ in b.pairs["val"]] == ["val0", "val1"] and "explicit" in b.source


def test_rgb_and_zero_255_masks_with_mask_values(tmp_path):
    root = make_folder(tmp_path, n=6, classes=2, rgb=True, values=[0, 255])
    with pytest.raises(FolderDataError, match=r"\[0, 255\].*mask_values"):
        FolderSegmentation(str(root), crop_size=16)
    data = FolderSegmentation(str(root), crop_size=16, mask_values=[0, 255], classes=["back", "fore"])
    assert (data.num_classes, data.in_channels, data.class_names) == (2, 3, ["back", "fore"])
    image, labels = data.dataset("test")[0]
    assert image.shape == (3, 24, 32) and image.dtype == torch.float32
    assert set(labels.unique().tolist()) <= {0, 1} and labels.dtype == torch.int64


def test_void_label_becomes_the_ignore_index(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        image, mask = blobs(rng, 20, 20, 3, rgb=False)
        mask[:2] = 7  # a void label along the top
        write_pair(tmp_path / "images", tmp_path / "masks", f"{i}", image, mask)
    with pytest.raises(FolderDataError, match="ignore_index"):
        FolderSegmentation(str(tmp_path), crop_size=8)
    data = FolderSegmentation(str(tmp_path), crop_size=8, ignore_index=7)
    assert data.num_classes == 3
    _, labels = data.dataset("test")[0]
    assert (labels[:2] == IGNORE_INDEX).all() and (labels[2:] >= 0).all()


def test_mixed_sizes_crop_for_training_and_whole_images_for_evaluation(tmp_path):
    root = make_folder(tmp_path, n=8, sizes=((24, 32), (40, 18)))
    with pytest.raises(ValueError, match="crop_size"):
        FolderSegmentation(str(root), crop_size=None)
    data = FolderSegmentation(str(root), crop_size=28, batch_size=4, seed=0)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4, 28, 28)
    # an image smaller than the crop is padded with the ignore label, never with a class
    assert (labels == IGNORE_INDEX).any()
    sizes = {tuple(x.shape[-2:]) for x, _ in data.test_dataloader()}
    assert sizes <= {(24, 32), (40, 18)}  # whole images at their own size, one a batch


def test_random_crop_pads_by_hand():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    crop_image, crop_labels = random_crop(image, labels, 4, np.random.default_rng(0))
    assert crop_image.shape == (4, 4)
    np.testing.assert_array_equal(crop_image[:2, :3], image)
    np.testing.assert_array_equal(crop_labels[2:], IGNORE_INDEX)
    np.testing.assert_array_equal(crop_labels[:, 3], IGNORE_INDEX)
    assert (crop_image[2:] == 0).all()


def test_loss_and_metrics_ignore_void_pixels_by_hand():
    # 2x3 labels, one void pixel; two classes. Logits: class 1 wins where the column is > 0.
    target = torch.tensor([[[0, 1, IGNORE_INDEX], [0, 0, 1]]])
    logits = torch.zeros(1, 2, 2, 3)
    logits[0, 1, :, 1:] = 2.0  # predicts [[0, 1, 1], [0, 1, 1]]
    loss = segmentation_loss(logits, target)
    # five counted pixels, by hand: (0,0) and (1,0) tie: ln 2 each; (0,1) and (1,2) are class 1
    # with logits (0, 2): ln(1 + e^-2) each; (1,1) is class 0 with logits (0, 2): ln(1 + e^2);
    # the void pixel (0,2) adds nothing and is not counted
    expected = (2 * math.log(2) + 2 * math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    m = SegmentationMetrics(2)
    m.update(logits, target)
    s = m.compute()
    # class 0: truth {(0,0),(1,0),(1,1)}, predicted {(0,0),(1,0)}: IoU 2/3; class 1: truth
    # {(0,1),(1,2)}, predicted {(0,1),(1,1),(1,2)} (the void pixel not counted): IoU 2/3
    torch.testing.assert_close(s["iou"], torch.tensor([2 / 3, 2 / 3], dtype=torch.float64))
    assert s["pixel_acc"].item() == pytest.approx(4 / 5)
    assert "digit_miou" not in s  # no background class named


def test_dice_leaves_void_pixels_out():
    from zoo.training.losses import dice_loss

    target = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    logits = torch.tensor([[[[9.0, -9.0, -9.0]], [[-9.0, 9.0, 9.0]]]])  # confident and right
    # the void pixel's confident class-1 vote must not count: nearly a perfect score
    assert dice_loss(logits, target, eps=1e-6).item() < 1e-3


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_mask", r"1 image\(s\) in .* have no mask .*img03"),
        ("no_image", r"1 mask\(s\) in .* have no image .*extra"),
        ("size", r"img01.png is 24x32 but its image .* is 20x20"),
        ("stray", r"values \[0, 1, 2, 9\], which are not class indices .*img02.png.*mask_values"),
        ("empty", r"holds no image files"),
        ("unreadable", r"cannot read image .*img04.png"),
        ("mixed", r"mixes grayscale and RGB images, e.g. .*img0\d.png \(grayscale\) and .*img05.png \(RGB\)"),
        ("no_layout", r"no layout found"),
    ],
)
def test_bad_folders_fail_before_training_naming_the_file(tmp_path, breakage, message):
    root = make_folder(tmp_path / "d", n=8, classes=3)
    images, masks = root / "images", root / "masks"
    if breakage == "no_mask":
        (masks / "img03.png").unlink()
    elif breakage == "no_image":
        Image.fromarray(np.zeros((24, 32), np.uint8)).save(masks / "extra.png")
    elif breakage == "size":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(images / "img01.png")
    elif breakage == "stray":
        mask = np.asarray(Image.open(masks / "img02.png")).copy()
        mask[0, 0] = 9
        Image.fromarray(mask).save(masks / "img02.png")
    elif breakage == "empty":
        for p in images.iterdir():
            p.unlink()
    elif breakage == "unreadable":
        (images / "img04.png").write_bytes(b"not a png")
    elif breakage == "mixed":
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(images / "img05.png")
    elif breakage == "no_layout":
        images.rename(root / "pictures")
    with pytest.raises(FolderDataError, match=message):
        FolderSegmentation(str(root), crop_size=16)


def test_class_names_must_match_the_classes_present(tmp_path):
    root = make_folder(tmp_path, n=6, classes=3)
    with pytest.raises(
        FolderDataError, match=r"img\d\d.png holds mask value\(s\) \[2\] that are neither a class"
    ):
        FolderSegmentation(str(root), crop_size=16, classes=["a", "b"])


def test_mean_std_statistics_by_hand(tmp_path):
    root = make_folder(tmp_path, n=6, rgb=True)
    data = FolderSegmentation(str(root), crop_size=16, normalize="mean_std", augment=False)
    train = np.stack([np.asarray(Image.open(img)) for img, _ in data.pairs["train"]]).astype(np.float64) / 255
    np.testing.assert_allclose(data.normalization["mean"], train.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(data.normalization["std"], train.std(axis=(0, 1, 2)), atol=1e-6)
    x, _ = data.dataset("test")[0]
    raw = np.asarray(Image.open(data.pairs["test"][0][0])).astype(np.float64) / 255
    expected = (raw - train.mean(axis=(0, 1, 2))) / train.std(axis=(0, 1, 2))
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-4)  # statistics kept to 6 digits


def test_mask_values_map_by_hand():
    values = MaskValues(3, (10, 20, 30), ignore=255)
    stored = np.array([[10, 20, 30, 255]])
    np.testing.assert_array_equal(values.to_labels(stored), [[0, 1, 2, IGNORE_INDEX]])
    assert values.stray(np.array([10, 11, 255])) == [11]


def test_npy_images_and_grayscale_predict_formats(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        image, mask = blobs(rng, 16, 16, 2, rgb=False)
        write_pair(tmp_path / "images", tmp_path / "masks", f"{i}", image, mask, suffix=".npy")
    data = FolderSegmentation(str(tmp_path), crop_size=8)
    assert data.in_channels == 1
    model = zoo.create_model("vgg4_dilated", num_classes=2).eval()
    image = np.zeros((16, 20), np.uint8)
    assert zoo.predict(model, image).shape == (16, 20)
    assert zoo.predict(model, Image.fromarray(image)).shape == (16, 20)
    with pytest.raises(ValueError, match="takes 1 channel"):
        zoo.predict(model, Image.fromarray(np.zeros((16, 20, 3), np.uint8)))


def test_rgb_predict_accepts_hwc_nhwc_and_pil_and_applies_the_recorded_statistics():
    torch.manual_seed(0)
    model = zoo.create_model("vgg4_dilated", in_channels=3, num_classes=4).eval()
    model.preprocessing = {"scale": 255.0, "mean": [0.2, 0.4, 0.6], "std": [0.5, 0.25, 0.1]}
    image = np.random.default_rng(0).integers(0, 256, (18, 22, 3)).astype(np.uint8)
    x = (torch.from_numpy(image).float() / 255 - torch.tensor([0.2, 0.4, 0.6])) / torch.tensor(
        [0.5, 0.25, 0.1]
    )
    with torch.no_grad():
        expected = model(x.permute(2, 0, 1)[None]).argmax(1)[0].numpy()
    np.testing.assert_array_equal(zoo.predict(model, image), expected)
    np.testing.assert_array_equal(zoo.predict(model, image[None].repeat(2, 0)), np.stack([expected] * 2))
    np.testing.assert_array_equal(zoo.predict(model, Image.fromarray(image)), expected)
    np.testing.assert_array_equal(zoo.predict(model, image, tile=8), expected)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(N, H, W, 3\)"):
        zoo.predict(model, image[..., 0])


def test_onnx_graph_applies_the_recorded_statistics(tmp_path):
    pytest.importorskip("onnxruntime")
    from zoo.inference import OnnxModel, export_onnx

    torch.manual_seed(0)
    model = zoo.create_model("vgg4_dilated", in_channels=3, num_classes=4).eval()
    model.preprocessing = {"scale": 255.0, "mean": [0.2, 0.4, 0.6], "std": [0.5, 0.25, 0.1]}
    path = export_onnx(model, tmp_path / "m.onnx", example_size=(32, 32))
    image = np.random.default_rng(1).integers(0, 256, (2, 30, 26, 3)).astype(np.uint8)
    onnx_labels = zoo.predict(OnnxModel(path, source=model), image)
    assert (onnx_labels == zoo.predict(model, image)).mean() > 0.999


def test_models_know_no_data_set():
    # no module under zoo/models or zoo/layers imports zoo.data (the M2NIST defaults live with the models)
    for path in [*(ROOT / "zoo" / "models").glob("*.py"), *(ROOT / "zoo" / "layers").glob("*.py")]:
        assert "zoo.data" not in path.read_text(), path


def test_switching_data_modules_keeps_each_modules_own_defaults(tmp_path):
    # LightningCLI carries the default module's values into the module --data names: folder runs
    # once trained without their flips and rotations because M2NIST's augment=False came along
    import inspect

    m2nist = inspect.signature(M2NISTDataModule.__init__).parameters
    folder = inspect.signature(FolderSegmentation.__init__).parameters
    for name in (m2nist.keys() & folder.keys()) - {"self"}:
        assert m2nist[name].default == folder[name].default, name
    args = ["--data", "FolderSegmentation", "--data.root", str(make_folder(tmp_path / "data"))]
    data = cli_for(args).datamodule
    assert isinstance(data, FolderSegmentation) and data.hparams.augment is True
    assert data.dataset("train").transform is not None
    assert cli_for([*args, "--data.augment", "false"]).datamodule.hparams.augment is False
    m2nist_data = cli_for([]).datamodule
    assert isinstance(m2nist_data, M2NISTDataModule) and m2nist_data.hparams.augment is False


def train_py(args: list[str]) -> int:
    from zoo.training.cli import main

    return main(args)


def test_one_epoch_fit_on_an_rgb_folder_then_load_and_predict(tmp_path):
    root = make_folder(tmp_path / "rgb", n=12, classes=5, rgb=True, sizes=((24, 32), (28, 20)))
    run = tmp_path / "run"
    rc = train_py([
        "fit", "--data", "FolderSegmentation", "--data.root", str(root), "--data.crop_size", "16",
        "--data.batch_size", "4", "--data.classes", "[a, b, c, d, e]", "--data.normalize", "mean_std",
        "--model.arch", "vgg4_dilated", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    assert rc == 0
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["classes"] == ["a", "b", "c", "d", "e"] and len(results["test"]["iou"]) == 5
    assert "digit_miou" not in results["test"] and "folder data" in results["data"]
    assert (run / "splits.json").is_file() and (run / "results.png").is_file()
    model = zoo.load(run / "best.ckpt")
    assert (model.in_channels, model.num_classes, model.class_names) == (3, 5, ["a", "b", "c", "d", "e"])
    assert model.preprocessing["mean"] is not None
    image = np.asarray(Image.open(next((root / "images").iterdir())))
    labels = zoo.predict(model, image)
    assert labels.shape == image.shape[:2] and labels.min() >= 0 and labels.max() < 5
    # the example application segments the RGB file as the model was trained
    import importlib.util

    spec = importlib.util.spec_from_file_location("segment_example", ROOT / "examples" / "segment.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    source = next((root / "images").iterdir())
    assert (
        example.main(
            [str(source), str(tmp_path / "labels.png"), "--checkpoint", str(run / "best.ckpt"), "--tile", "8"]
        )
        == 0
    )
    assert Image.open(tmp_path / "labels.png").size == Image.open(source).size
    # the shipped form carries what an application needs
    weights, card_path = zoo.export(run / "best.ckpt", tmp_path / "out", tag="mine")
    card = json.loads(card_path.read_text())
    assert (
        card["classes"] == ["a", "b", "c", "d", "e"]
        and card["preprocessing"]["mean"] == model.preprocessing["mean"]
    )
    assert card["model_kwargs"]["in_channels"] == 3
    again = zoo.load(weights)
    np.testing.assert_array_equal(zoo.predict(again, image), labels)
    # weights of 5 classes cannot start a 3-class run: said before training
    other = make_folder(tmp_path / "three", n=8, classes=3)
    rc = train_py([
        "fit", "--data", "FolderSegmentation", "--data.root", str(other), "--data.crop_size", "16",
        "--model.arch", "vgg4_dilated", "--model.init_from", str(run / "best.ckpt"),
        "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(tmp_path / "run3"), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    assert rc == 2


def test_colour_masks_through_a_palette_and_class_pixel_counts_by_hand(tmp_path):
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    for i in range(6):
        mask = np.zeros((8, 10, 3), np.uint8)
        mask[:2] = palette[1]  # 20 red pixels
        mask[2:3, :5] = palette[2]  # 5 blue pixels
        write_pair(
            tmp_path / "images", tmp_path / "masks", f"{i}", np.full((8, 10), 9, np.uint8), np.zeros((8, 10))
        )
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    with pytest.raises(FolderDataError, match="colour mask: pass the colour of each class as --data.palette"):
        FolderSegmentation(str(tmp_path), crop_size=8, val_fraction=0.2, test_fraction=0.2)
    data = FolderSegmentation(
        str(tmp_path), crop_size=8, palette=palette, val_fraction=0.2, test_fraction=0.2
    )
    assert data.num_classes == 3
    assert data.class_pixel_counts() == [4 * 55, 4 * 20, 4 * 5]  # four training images of 80 pixels
    _, labels = data.dataset("test")[0]
    assert labels[:2].eq(1).all() and labels[2, :5].eq(2).all() and labels[3:].eq(0).all()
    bad = np.zeros((8, 10, 3), np.uint8)
    bad[0, 0] = [1, 2, 3]
    Image.fromarray(bad).save(tmp_path / "masks" / "0.png")
    with pytest.raises(FolderDataError, match=r"0.png: colour\(s\) \[\[1, 2, 3\]\] are not in the palette"):
        FolderSegmentation(str(tmp_path), crop_size=8, palette=palette)


def test_an_epoch_covers_every_training_pixel_about_once_by_default(tmp_path):
    # 40x50 images in crops of 16: ceil(40/16) = 3 rows by ceil(50/16) = 4 columns, 12 a image
    mask = np.zeros((40, 50), np.uint8)
    mask[:10] = 1  # two classes
    for i in range(5):
        write_pair(tmp_path / "images", tmp_path / "masks", f"{i}", np.zeros((40, 50), np.uint8), mask)
    data = FolderSegmentation(str(tmp_path), crop_size=16, val_fraction=0.2, test_fraction=0.2)
    assert len(data.dataset("train")) == 3 * 12
    given = FolderSegmentation(
        str(tmp_path), crop_size=16, crops_per_epoch=7, val_fraction=0.2, test_fraction=0.2
    )
    assert len(given.dataset("train")) == 7
    whole = FolderSegmentation(str(tmp_path), crop_size=None, val_fraction=0.2, test_fraction=0.2)
    assert len(whole.dataset("train")) == 3
