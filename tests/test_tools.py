"""The developer tools in tools/: training inputs, and the error analysis on hand-built label maps."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_tool

import zoo
from zoo.checkpoint import _earlier_stages
from zoo.shipped import load_state_checked

ROOT = Path(__file__).resolve().parent.parent


BG = 10  # the background label


@pytest.mark.slow  # about 9 s: trains a small classifier
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


def two_digits(bridge: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 3 in columns 0-1 and a 7 in columns 4-5 (rows 1-3); `bridge` inks row 2 of columns 2-3."""
    labels = np.full((5, 8), BG)
    labels[1:4, 0:2], labels[1:4, 4:6] = 3, 7
    if bridge:
        labels[2, 2], labels[2, 3] = 3, 7
    image = np.where(labels != BG, 200, 0).astype(np.uint8)
    return image, labels


def test_contact_distance_by_hand():
    tool = load_tool("identity_errors")
    _, labels = two_digits(bridge=False)
    dist = tool.contact_distance(labels)
    # the nearest pixel of the other digit is straight across, in the same row
    assert np.all(dist[1:4, 1] == 3) and np.all(dist[1:4, 0] == 4)
    assert np.all(dist[1:4, 4] == 3) and np.all(dist[1:4, 5] == 4)
    assert np.all(np.isinf(dist[labels == BG]))
    _, labels = two_digits(bridge=True)
    dist = tool.contact_distance(labels)
    assert dist[2, 2] == 1 and dist[2, 3] == 1
    assert dist[1, 1] == pytest.approx(np.hypot(1, 2))  # to the 7 at (2, 3)
    alone = np.full((4, 4), BG)
    alone[1:3, 1:3] = 5
    assert np.all(np.isinf(tool.contact_distance(alone)))


def test_touching_digits_by_hand():
    tool = load_tool("identity_errors")
    image, labels = two_digits(bridge=False)
    assert not tool.touching_digits(image, labels).any()
    image, labels = two_digits(bridge=True)
    touching = tool.touching_digits(image, labels)
    assert np.array_equal(touching, labels != BG)
    # a diagonal step is 8-connected: one group
    image, labels = np.zeros((3, 3), np.uint8), np.full((3, 3), BG)
    image[0, 0], image[1, 1] = 9, 9
    labels[0, 0], labels[1, 1] = 1, 2
    assert tool.touching_digits(image, labels).sum() == 2


def test_glyph_vote_by_hand():
    tool = load_tool("identity_errors")
    # a 1x4 image: glyph 0 on pixels 0-1, glyph 1 on pixel 2, background on pixel 3
    owners = np.array([[0, 0, 1, 255]], np.uint8)
    probs = np.zeros((11, 1, 4), np.float32)
    probs[2, 0, 0], probs[7, 0, 0] = 0.6, 0.4  # alone, pixel 0 says 2
    probs[2, 0, 1], probs[7, 0, 1] = 0.3, 0.7  # glyph 0's mean: 2 -> 0.45, 7 -> 0.55
    probs[4, 0, 2], probs[1, 0, 2] = 0.9, 0.1
    probs[BG, 0, 3] = 1.0
    assert tool.glyph_vote(probs, owners).tolist() == [[7, 7, 4, BG]]


def test_same_arrangements_lay_out_every_pool_alike():
    # the tool draws each pool's images from one seed; pools of 4,000 and 500 copies of one
    # solid glyph can only give the same images if counts and positions match image by image
    tool = load_tool("identity_errors")
    solid = np.full((1, 28, 28), 200, np.uint8)
    made = [
        tool.compose(
            np.repeat(solid, n, 0), np.full(n, 3), 500, np.random.default_rng([0, 99]), layout=tool.LAYOUT
        )[0]
        for n in (4000, 500)
    ]
    assert np.array_equal(*made)
    alike = tool.same_arrangements(size=20)
    assert [im.shape for im, _ in alike.values()] == [(20, 64, 84)] * 3
