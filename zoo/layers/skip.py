"""A full-resolution skip connection that carries early features to the head."""

from __future__ import annotations

import torch
import torch.nn as nn


class SkipConcat(nn.Module):
    """Run `body` and return its input beside its output, concatenated on the channels.

    U-Net's top skip without the round trip: the head gets the early layers' sharp features
    next to the deep layers' wide-context ones. In a network that never downsamples, nothing
    has to be upsampled or cropped to line them up.

    Args:
        body: the layers skipped over; they must keep H and W.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)
