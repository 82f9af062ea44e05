"""hubconf.py: every registered model through torch.hub, offline from the checkout."""

import importlib.util
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

import zoo

ROOT = Path(__file__).resolve().parent.parent


def test_every_registered_model_is_an_entry_point():
    # torch.hub.list reads GitHub repositories only; its rule: public callables of hubconf.py
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert sorted(entries) == sorted(zoo.list_models())
    for name in entries:  # each one reachable through torch.hub.load
        model = torch.hub.load(str(ROOT), name, source="local")
        assert type(model) is type(zoo.create_model(name))


def test_hub_load_gives_the_shipped_weights():
    model = torch.hub.load(str(ROOT), "vgg4_dilated", source="local", pretrained=True)
    shipped = load_file(ROOT / "checkpoints" / "vgg4_dilated.m2nist.safetensors")  # read directly
    state = model.state_dict()
    for k, v in shipped.items():
        np.testing.assert_array_equal(state[k].numpy(), v, err_msg=k)
    fresh = torch.hub.load(str(ROOT), "unet_small", source="local", num_classes=3)
    assert fresh(torch.rand(1, 1, 20, 24)).shape == (1, 3, 20, 24)
