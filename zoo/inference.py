"""Segmenting images in applications, and exporting models for other runtimes."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from zoo.preprocess import normalize


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the block, then every submodule back in its own mode (also on errors)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def as_batch(images, in_channels: int = 1) -> tuple[torch.Tensor, bool]:
    """Raw uint8 numpy images or normalised float tensors -> (float (N, C, H, W), single image?).

    Uint8 images go through `zoo.preprocess.normalize`, the zoo's one normalisation.
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images in 0..255, found a {images.dtype} array; pass already "
                "normalised floats as a torch tensor instead"
            )
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


def predict(
    model: nn.Module,
    images,
    batch_size: int = 64,
    return_probs: bool = False,
    dtype: torch.dtype | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-pixel labels for images of any size, on the model's device, without gradients.

    Args:
        images: raw uint8 numpy images in 0..255, (H, W) or (N, H, W); or a float tensor already
            normalised (N, 1, H, W), (N, H, W) or (H, W) (a C-channel model: (N, C, H, W) or (C, H, W)).
        batch_size: images per forward pass.
        return_probs: also return the softmax probabilities, float32 (N, classes, H, W).
        dtype: torch.bfloat16 computes under bf16 autocast (weights stay fp32; on a CPU the fused
            convolutions fold batch norm in fp32, then run in bf16); None: the weights' dtype.

    Returns:
        int64 labels shaped like the input images without channels ((H, W) or (N, H, W), also for
        N = 1), and the probabilities on request.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, found {batch_size}")
    x, single = as_batch(images, getattr(model, "in_channels", 1))
    if dtype not in (None, torch.bfloat16):
        raise ValueError(f"dtype must be None (the weights' dtype) or torch.bfloat16, found {dtype}")
    param = next(model.parameters())
    autocast = torch.autocast(param.device.type, dtype=torch.bfloat16, enabled=dtype is not None)
    labels, probs = [], []
    with eval_mode(model), torch.inference_mode(), autocast:
        for chunk in x.split(batch_size):
            logits = model(chunk.to(param.device, param.dtype)).float()
            labels.append(logits.argmax(1).cpu())
            if return_probs:
                probs.append(logits.softmax(1).cpu())
    out = torch.cat(labels).numpy().astype(np.int64)
    out = out[0] if single else out
    if not return_probs:
        return out
    p = torch.cat(probs).numpy()
    return out, (p[0] if single else p)


def export_onnx(
    model: nn.Module, path: str | Path, opset: int = 18, example_size: tuple[int, int] = (64, 84)
) -> Path:
    """Write `model` in eval mode as ONNX with dynamic batch, height and width ("images" -> "logits").

    Heights and widths from 16 to 8192 pixels.

    The model is handed back in the mode it came in.
    """
    path = Path(path)
    example = torch.rand(2, getattr(model, "in_channels", 1), *example_size)
    # at least 16x16: three 2x2 max pools with ceil_mode need 9 rows to stay non-empty
    sizes = (("batch", 1), ("height", 16), ("width", 16))
    batch, height, width = (torch.export.Dim(n, min=least, max=8192) for n, least in sizes)
    with eval_mode(model):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch, 2: height, 3: width}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    return path
