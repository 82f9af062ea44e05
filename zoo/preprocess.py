"""The one input normalisation of the zoo, shared by data loading, training and inference.

Images are scaled to [0, 1] (x / 255) and nothing else: background stays exactly 0, the same
value as the convolutions' zero padding, so a digit at the border looks like one inside.
"""

from __future__ import annotations

import numpy as np
import torch

SCALE = 255.0


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (..., H, W) in 0..255 -> float32 tensor in [0, 1] of the same shape."""
    if isinstance(images, np.ndarray):
        # read-only arrays (np.asarray of a PIL image) are fine: the result is a new float tensor
        images = torch.from_numpy(images if images.flags.writeable else images.copy())
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images in 0..255, found {images.dtype}")
    return images.float().div_(SCALE)
