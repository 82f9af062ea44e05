"""The one input normalisation of the zoo, shared by data loading, training and inference.

Images are scaled to [0, 1] (x / 255) and, by default, nothing else: background stays exactly
0, the same value as the convolutions' zero padding, so a digit at the border looks like one
inside. A model trained on one's own images with per-channel statistics carries them
(`model.preprocessing`), and `standardize` applies them after the scaling.
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


def _tensor(images: np.ndarray) -> torch.Tensor:
    # a view where the array is writable; read-only arrays (np.asarray of a PIL image) are copied
    return torch.from_numpy(images if images.flags.writeable else images.copy())


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (..., H, W) in 0..255 -> float32 tensor in [0, 1] of the same shape."""
    check_uint8(images)
    if isinstance(images, np.ndarray):
        images = _tensor(images)
    return images.float().div_(SCALE)


def as_batch(images, in_channels: int = 1, scale: bool = True) -> tuple[torch.Tensor, bool]:
    """Raw uint8 images (numpy or PIL) or normalised float tensors -> (float (N, C, H, W), single image?).

    Raw images: grayscale (H, W) or (N, H, W) for a one-channel model; (H, W, C) or (N, H, W, C)
    for a C-channel one; a PIL image of the matching mode. They go through
    `zoo.preprocess.normalize` (x / 255); `standardize` then applies a model's recorded statistics.
    With `scale=False` raw images stay uint8 (a view of the array where it can be), for
    normalising piece by piece.
    """
    if type(images).__module__.startswith("PIL."):
        mode, wanted = images.mode, "L" if in_channels == 1 else "RGB"
        if mode == "P" or (mode == "1" and wanted == "L"):
            images = images.convert(wanted)
        elif mode != wanted:
            raise ValueError(
                f"the model takes {in_channels} channel(s) ({wanted} images), found a PIL image of mode "
                f"{mode!r}"
            )
        images = np.asarray(images)
    if isinstance(images, np.ndarray):
        check_uint8(images)
        if in_channels == 1:
            if images.ndim == 3 and images.shape[-1] in (3, 4) and images.shape[0] > 4:
                raise ValueError(
                    f"expected grayscale images, found shape {images.shape} (colour channels last?)"
                )
            if images.ndim not in (2, 3):
                raise ValueError(f"expected grayscale images (H, W) or (N, H, W), found shape {images.shape}")
            x = _tensor(images).reshape(-1, 1, *images.shape[-2:])
            return (normalize(x) if scale else x), images.ndim == 2
        if images.ndim not in (3, 4) or images.shape[-1] != in_channels:
            raise ValueError(
                f"expected {in_channels}-channel images (H, W, {in_channels}) or (N, H, W, {in_channels}) "
                f"for a {in_channels}-channel model, found shape {images.shape}"
            )
        x = _tensor(images)
        x = (normalize(x) if scale else x).movedim(-1, -3)
        return (x[None], True) if images.ndim == 3 else (x, False)
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


def standardize(x: torch.Tensor, preprocessing: dict | None) -> torch.Tensor:
    """x / 255 images (N, C, H, W) -> the model's input: per channel (x - mean) / std where the
    training data recorded them (`preprocessing` holds "mean" and "std"), else `x` itself."""
    if not preprocessing or preprocessing.get("mean") is None:
        return x
    mean = torch.tensor(preprocessing["mean"], dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if mean.shape[1] != x.shape[1]:
        raise ValueError(
            f"the recorded normalisation has {mean.shape[1]} channel(s), the images {x.shape[1]}"
        )
    return (x - mean) / std
