"""The one input normalisation of the zoo, shared by data loading, training and inference.

Images are scaled to [0, 1] (x / 255) and nothing else: background stays exactly 0, the same
value as the convolutions' zero padding, so a digit at the border looks like one inside.
"""

from __future__ import annotations

import numpy as np
import torch

SCALE = 255.0


def check_uint8(images: np.ndarray | torch.Tensor) -> None:
    """Raise a ValueError unless `images` hold raw uint8 pixels (0..255), saying what they hold."""
    if images.dtype not in (np.uint8, torch.uint8):
        kind = "array" if isinstance(images, np.ndarray) else "tensor"
        raise ValueError(
            f"expected uint8 images in 0..255, found a {images.dtype} {kind}; pass already normalised "
            "floats (x / 255) as a torch tensor instead"
        )


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (..., H, W) in 0..255 -> float32 tensor in [0, 1] of the same shape."""
    check_uint8(images)
    if isinstance(images, np.ndarray):
        # read-only arrays (np.asarray of a PIL image) are fine: the result is a new float tensor
        images = torch.from_numpy(images if images.flags.writeable else images.copy())
    return images.float().div_(SCALE)


def as_batch(images, in_channels: int = 1) -> tuple[torch.Tensor, bool]:
    """Raw uint8 numpy images or normalised float tensors -> (float (N, C, H, W), single image?).

    Uint8 images go through `zoo.preprocess.normalize`, the zoo's one normalisation.
    """
    if isinstance(images, np.ndarray):
        check_uint8(images)
        if images.ndim == 3 and images.shape[-1] in (3, 4) and in_channels == 1 and images.shape[0] > 4:
            raise ValueError(f"expected grayscale images, found shape {images.shape} (colour channels last?)")
        if images.ndim not in (2, 3):
            raise ValueError(f"expected images (H, W) or (N, H, W), found shape {images.shape}")
        single = images.ndim == 2
        if in_channels != 1:
            raise ValueError(
                f"uint8 images are grayscale (H, W) or (N, H, W); a {in_channels}-channel model needs a float tensor"
            )
        return normalize(images).reshape(-1, 1, *images.shape[-2:]), single
    if isinstance(images, torch.Tensor):
        if not images.is_floating_point():
            raise ValueError(
                f"a tensor input must be floats already normalised (x / 255), found {images.dtype}; "
                "pass raw uint8 images as a numpy array"
            )
        # a 3-d tensor is a batch (N, H, W) for a one-channel model, whatever N (also 1), so the
        # labels' shape never depends on the batch size; for a C-channel model, one image (C, H, W)
        single = images.dim() == 2 or (images.dim() == 3 and in_channels > 1)
        given = tuple(images.shape)
        if images.dim() == 2:
            images = images[None, None]
        elif images.dim() == 3:
            images = images[None] if in_channels > 1 else images[:, None]
        if images.dim() != 4 or images.shape[1] != in_channels:
            forms = (
                "(N, 1, H, W), (N, H, W) or (H, W)"
                if in_channels == 1
                else f"(N, {in_channels}, H, W) or ({in_channels}, H, W)"
            )
            raise ValueError(f"expected a float tensor {forms}, found {given}")
        return images, single
    raise TypeError(f"images must be a numpy array or a torch tensor, found {type(images).__name__}")
