import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _predict_with_pytorch(monkeypatch):
    # zoo.predict's "auto" backend exports each new model to onnxruntime on its first call (seconds):
    # the suite runs PyTorch's path unless a test asks for a backend (tests/test_tiling.py does)
    monkeypatch.setenv("ZOO_PREDICT_BACKEND", "torch")
