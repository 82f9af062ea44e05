"""Moved to `zoo.training.losses` (the Lightning side, the `train` extra); this path works until 0.4."""

from zoo._moved import forward_to

__getattr__ = forward_to(__name__, "zoo.training.losses")
