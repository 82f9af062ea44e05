"""U-Net baselines: the encoder-decoder a user would otherwise pick (Ronneberger et al., 2015).

Every level: two 3x3 Conv-BN-ReLU; 2x2 max pooling down; up by bilinear x2 + 1x1 conv (or a 2x2
transposed conv), concatenated with the encoder's skip, then two 3x3 Conv-BN-ReLU. Inputs of any
size are zero-padded at the bottom and right to a multiple of 2^(levels - 1) and the logits
cropped back, so like every zoo model it returns logits of the input's size.

    model         widths        params (M2NIST)
    unet_small    8-16-28       24,987 (vgg4_dilated: 25,235)
    unet          16-32-56      98,635
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.conv import ConvBNAct
from zoo.models.base import DEFAULT_NUM_CLASSES, ZooModel, check_widths
from zoo.registry import register_model

UPSAMPLING = ("bilinear", "transpose")


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(cin, cout, 3), ConvBNAct(cout, cout, 3))


class UNetFeatures(nn.Module):
    """Encoder, decoder and skips; maps (N, C, H, W) to (N, widths[0], H, W)."""

    def __init__(self, in_channels: int, widths: Sequence[int], up: str) -> None:
        super().__init__()
        self.multiple = 2 ** (len(widths) - 1)
        self.down = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.down.append(_double_conv(prev, w))
            prev = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            if up == "transpose":
                self.up.append(nn.ConvTranspose2d(prev, w, 2, stride=2))
            else:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(prev, w, 1))
                )
            self.merge.append(_double_conv(2 * w, w))
            prev = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([skip, up(x)], dim=1))
        return x[:, :, :h, :w]


class UNet(ZooModel):
    """A standard U-Net: downsampling encoder, upsampling decoder, skip connections.

    Args:
        widths: channels per level, from full resolution down; len(widths) - 1 poolings.
        up: "bilinear" (x2 bilinear then a 1x1 conv) or "transpose" (2x2 transposed conv).
        in_channels, num_classes, head: as for every zoo model.
    """

    def __init__(
        self,
        widths: Sequence[int] = (8, 16, 28),
        up: str = "bilinear",
        in_channels: int = 1,
        num_classes: int = DEFAULT_NUM_CLASSES,
        head: str = "pixel",
    ) -> None:
        super().__init__(in_channels, num_classes, head)
        widths = check_widths(widths)
        if up not in UPSAMPLING:
            raise ValueError(f"up must be one of {UPSAMPLING}, found {up!r}")
        self.features = UNetFeatures(in_channels, widths, up)
        # logits come out at full size, but through a stride-2^(levels-1) bottleneck
        self.output_stride = self.features.multiple
        self._finish(widths[0])

    @property
    def full_resolution(self) -> bool:
        return False


@register_model
def unet_small(**kwargs) -> UNet:
    """U-Net baseline, widths 8-16-28, about as many parameters as `vgg4_dilated`."""
    return UNet(**{"widths": (8, 16, 28), **kwargs})


@register_model
def unet(**kwargs) -> UNet:
    """U-Net baseline, widths 16-32-56, about 100k parameters."""
    return UNet(**{"widths": (16, 32, 56), **kwargs})
