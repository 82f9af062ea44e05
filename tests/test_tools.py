"""The analysis helpers of tools/identity_errors.py, on label maps small enough to work out by hand."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
SPEC = importlib.util.spec_from_file_location(
    "identity_errors", Path(__file__).resolve().parent.parent / "tools" / "identity_errors.py"
)
identity_errors = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(identity_errors)
BG = 10


def two_digits(bridge: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 3 in columns 0-1 and a 7 in columns 4-5 (rows 1-3); `bridge` inks row 2 of columns 2-3."""
    labels = np.full((5, 8), BG)
    labels[1:4, 0:2], labels[1:4, 4:6] = 3, 7
    if bridge:
        labels[2, 2], labels[2, 3] = 3, 7
    image = np.where(labels != BG, 200, 0).astype(np.uint8)
    return image, labels


def test_contact_distance_by_hand():
    _, labels = two_digits(bridge=False)
    dist = identity_errors.contact_distance(labels)
    # the nearest pixel of the other digit is straight across, in the same row
    assert np.all(dist[1:4, 1] == 3) and np.all(dist[1:4, 0] == 4)
    assert np.all(dist[1:4, 4] == 3) and np.all(dist[1:4, 5] == 4)
    assert np.all(np.isinf(dist[labels == BG]))
    _, labels = two_digits(bridge=True)
    dist = identity_errors.contact_distance(labels)
    assert dist[2, 2] == 1 and dist[2, 3] == 1
    assert dist[1, 1] == pytest.approx(np.hypot(1, 2))  # to the 7 at (2, 3)
    alone = np.full((4, 4), BG)
    alone[1:3, 1:3] = 5
    assert np.all(np.isinf(identity_errors.contact_distance(alone)))


def test_touching_digits_by_hand():
    image, labels = two_digits(bridge=False)
    assert not identity_errors.touching_digits(image, labels).any()
    image, labels = two_digits(bridge=True)
    touching = identity_errors.touching_digits(image, labels)
    assert np.array_equal(touching, labels != BG)
    # a diagonal step is 8-connected: one group
    image, labels = np.zeros((3, 3), np.uint8), np.full((3, 3), BG)
    image[0, 0], image[1, 1] = 9, 9
    labels[0, 0], labels[1, 1] = 1, 2
    assert identity_errors.touching_digits(image, labels).sum() == 2
