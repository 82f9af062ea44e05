"""Segmenting images in applications, and exporting models for other runtimes."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from zoo.models.base import eval_mode
from zoo.preprocess import as_batch, standardize
from zoo.progress import progress_bar
from zoo.rf import receptive_field

TTA = (None, "flip")


@dataclass(frozen=True)
class TilePlan:
    """How `predict` cuts an image into tiles: each tile's core plus `margin` pixels of context.

    Tile corners sit on multiples of `align` (the model's largest stride, so its downsampled
    grids line up with the whole image's). `exact`: tiles give the whole image's logits up to
    float rounding; where they cannot, `reason` says why.
    """

    margin: tuple[int, int]
    align: tuple[int, int]
    exact: bool
    reason: str = ""


def tile_plan(model: nn.Module, height: int, width: int, overlap: int | None = None) -> TilePlan:
    """The tiling of an `height` x `width` input that reproduces `model`'s whole-image output.

    A pixel's logits depend only on the input within its receptive field (`zoo.receptive_field`),
    so a margin of the field's radius makes full-resolution models exact. Downsampling models
    also need aligned tiles and one coarse step more of margin, and a model whose coarse logits
    are resized to the input's size is exact only for sizes that are multiples of its stride.

    Args:
        overlap: the margin to use instead of the derived one (smaller: not exact).
    """
    source = model if getattr(model, "source", None) is None else model.source
    field, why = None, ""
    if isinstance(source, OnnxModel):  # a graph run by onnxruntime: nothing to trace
        why = "an ONNX graph has no traceable receptive field (give OnnxModel its source model)"
    else:
        try:
            field = receptive_field(source)
        except Exception as e:  # an untraceable model: the caller must say how much context it needs
            why = f"cannot trace the receptive field of {type(model).__name__} ({type(e).__name__}: {e})"
    if field is None:
        if overlap is None:
            raise ValueError(f"{why}; pass overlap= (input pixels of context on each side of a tile)")
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, found {overlap}")
        return TilePlan((int(overlap),) * 2, (1, 1), False, f"{why}, so the overlap of {overlap} is unchecked")
    if field.global_pool:
        raise ValueError("a classify-head model sees the whole image: it cannot be tiled")
    align = tuple(math.lcm(*(layer.jump[i] for layer in field.layers), 1) for i in range(2))
    out_stride = field.jump  # > 1: coarse logits, resized bilinearly to the input's size
    # A pooling or upsampling window sits asymmetrically around a pixel of the finer grid (which
    # coarse cells it reads depends on the pixel's parity): one step of the coarsest grid more
    # on each side; a final resize of coarse logits reads one coarse step beyond the field.
    radius = tuple(
        (field.rf[i] - 1) // 2 + (align[i] if align[i] > 1 else 0) + (out_stride[i] if out_stride[i] > 1 else 0)
        for i in range(2)
    )
    wanted = radius if overlap is None else (int(overlap), int(overlap))
    if min(wanted) < 0:
        raise ValueError(f"overlap must be >= 0, found {overlap}")
    margin = tuple(-(-wanted[i] // align[i]) * align[i] for i in range(2))
    if overlap is not None and min(overlap - r for r in radius) < 0:
        return TilePlan(margin, align, False, f"overlap {overlap} is below the receptive-field radius {max(radius)}")
    size = (height, width)
    if any(out_stride[i] > 1 and size[i] % out_stride[i] for i in range(2)):
        return TilePlan(
            margin,
            align,
            False,
            f"{type(model).__name__} computes logits at 1/{max(out_stride)} of the input and resizes them to the "
            f"input's size; a tile's resize matches the whole image's only when height and width are "
            f"multiples of {max(out_stride)}, and {height}x{width} is not, so each tile is resized on its own "
            f"(labels can differ near tile seams); pad the image to a multiple of {max(out_stride)} for exact tiles",
        )
    return TilePlan(margin, align, True)


def _tiles(size: int, tile: int, margin: int) -> Iterator[tuple[int, int, int, int]]:
    """(start, stop) of each core and of its tile with context, along one axis."""
    for start in range(0, size, tile):
        stop = min(start + tile, size)
        yield start, stop, max(0, start - margin), min(size, stop + margin)


def _tile_sizes(tile: int, plan: TilePlan) -> tuple[int, int]:
    return tuple(a * -(-tile // a) for a in plan.align)  # rounded up to the alignment


def _scores(model: nn.Module, x: torch.Tensor, tta: str | None) -> torch.Tensor:
    """fp32 logits of `x`; with tta="flip", averaged with those of its mirror image."""
    out = model(x).float()
    if tta == "flip":
        out = (out + model(x.flip(-1)).float().flip(-1)) / 2
    return out


def _predict_chunk(model, x, tile, plan, tta, return_probs, bar) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels (N, H, W) and optionally probabilities of one batch, whole or tile by tile.

    Tiled, only the labels (and probabilities, if asked) are image-sized: each tile's logits are
    reduced before the next tile runs, so memory beyond the output is bounded by the tile.
    """
    if tile is None:
        logits = _scores(model, x, tta)
        bar.update(1)
        return logits.argmax(1), (logits.softmax(1) if return_probs else None)
    (n, _, h, w), (th, tw) = x.shape, _tile_sizes(tile, plan)
    labels, probs = torch.empty(n, h, w, dtype=torch.int64, device=x.device), None
    for y0, y1, ty0, ty1 in _tiles(h, th, plan.margin[0]):
        for x0, x1, tx0, tx1 in _tiles(w, tw, plan.margin[1]):
            part = _scores(model, x[..., ty0:ty1, tx0:tx1], tta)[..., y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]
            bar.update(1)
            labels[:, y0:y1, x0:x1] = part.argmax(1)
            if return_probs:
                if probs is None:
                    probs = torch.empty(n, part.shape[1], h, w, device=x.device)
                probs[..., y0:y1, x0:x1] = part.softmax(1)
    return labels, probs


def predict(
    model: nn.Module,
    images,
    batch_size: int = 64,
    return_probs: bool = False,
    dtype: torch.dtype | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    tta: str | None = None,
    progress: bool | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-pixel labels for images of any size, on the model's device, without gradients.

    Args:
        images: raw uint8 images in 0..255: numpy (H, W) or (N, H, W) for a grayscale model,
            (H, W, C) or (N, H, W, C) for a C-channel one, or a PIL image; they get the model's
            recorded normalisation (x / 255, then its per-channel mean/std if it has them). Or a
            float tensor that is the model's input already: (N, 1, H, W), (N, H, W) or (H, W) (a
            C-channel model: (N, C, H, W) or (C, H, W)).
        batch_size: images per forward pass.
        return_probs: also return the softmax probabilities, float32 (N, classes, H, W).
        dtype: torch.bfloat16 computes under bf16 autocast (weights stay fp32; on a CPU the fused
            convolutions fold batch norm in fp32, then run in bf16); None: the weights' dtype.
        tile: run the model on tiles of about this many pixels a side (rounded up to the model's
            alignment), each with `overlap` pixels of context, so memory is bounded by the tile,
            not the image. The default overlap comes from `tile_plan`: the same labels as the whole
            image at once (up to float rounding); where that cannot hold, a warning says why.
        overlap: the context margin to use instead (smaller than the receptive-field radius: tiles
            see less than the whole image would, and a warning says so).
        tta: "flip" averages the logits of the image and of its mirror image (horizontal flip);
            it hurts on M2NIST (digits are not mirror-symmetric: `python -m zoo.summary --tta`).
        progress: a progress bar over the forward passes; None: only on a terminal, and only for
            more than one pass.

    Returns:
        int64 labels shaped like the input images without channels ((H, W) or (N, H, W), also for
        N = 1), and the probabilities on request.

    Raises ValueError before any work when the images' shape, dtype or mode do not fit the model.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, found {batch_size}")
    if tile is not None and (not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int or None, found {tile!r}")
    if overlap is not None and tile is None:
        raise ValueError("overlap applies to tiled inference: pass tile= too")
    if tta not in TTA:
        raise ValueError(f"tta must be one of {TTA}, found {tta!r}")
    x, single = as_batch(images, getattr(model, "in_channels", 1))
    if not isinstance(images, torch.Tensor):  # raw images: the normalisation the model was trained with
        x = standardize(x, getattr(model, "preprocessing", None))
    if dtype not in (None, torch.bfloat16):
        raise ValueError(f"dtype must be None (the weights' dtype) or torch.bfloat16, found {dtype}")
    plan = None
    if tile is not None:
        plan = tile_plan(model, x.shape[-2], x.shape[-1], overlap)
        if not plan.exact:
            warnings.warn(f"tiled inference is not exact here: {plan.reason}", stacklevel=2)
    param = next(model.parameters(), None)
    if param is None:  # a module without weights of its own (OnnxModel): CPU, fp32 input
        param = torch.empty(0)
    autocast = torch.autocast(param.device.type, dtype=torch.bfloat16, enabled=dtype is not None)
    chunks = x.split(batch_size)
    steps = len(chunks)
    if tile is not None:
        th, tw = _tile_sizes(tile, plan)
        steps *= -(-x.shape[-2] // th) * -(-x.shape[-1] // tw)
    bar = progress_bar(total=steps, desc="predict", show=progress if progress is not None or steps > 1 else False)
    labels, probs = [], []
    with bar, eval_mode(model), torch.inference_mode(), autocast:
        for chunk in chunks:
            chunk_labels, chunk_probs = _predict_chunk(
                model, chunk.to(param.device, param.dtype), tile, plan, tta, return_probs, bar
            )
            labels.append(chunk_labels.cpu())
            if return_probs:
                probs.append(chunk_probs.cpu())
    out = torch.cat(labels).numpy().astype(np.int64)
    out = out[0] if single else out
    if not return_probs:
        return out
    p = torch.cat(probs).numpy()
    return out, (p[0] if single else p)


class OnnxModel(nn.Module):
    """An ONNX file written by `export_onnx`, run by onnxruntime behind the module interface, so
    `zoo.predict(OnnxModel(path, source=model), images, tile=512)` tiles it exactly as the model.

    Args:
        source: the PyTorch model it was exported from; `tile_plan` traces its receptive field
            (without it, tiled inference needs an explicit `overlap=`).
    """

    def __init__(self, path: str | Path, source: nn.Module | None = None) -> None:
        super().__init__()
        import onnxruntime as ort  # the onnx extra

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.in_channels = self.session.get_inputs()[0].shape[1]
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"images": x.detach().float().cpu().numpy()})
        return torch.from_numpy(logits)


class Standardized(nn.Module):
    """`model` behind its recorded per-channel normalisation: takes x / 255 images, as the ONNX graph does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.in_channels = model, getattr(model, "in_channels", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(standardize(x, self.model.preprocessing))


def export_onnx(
    model: nn.Module, path: str | Path, opset: int = 18, example_size: tuple[int, int] = (64, 84)
) -> Path:
    """Write `model` in eval mode as ONNX with dynamic batch, height and width ("images" -> "logits").

    Heights and widths from 16 to 8192 pixels. The graph takes x / 255 images: a model trained
    with per-channel statistics (`model.preprocessing`) has them applied inside the graph.

    The model is handed back in the mode it came in.
    """
    path = Path(path)
    example = torch.rand(2, getattr(model, "in_channels", 1), *example_size)
    # at least 16x16: three 2x2 max pools with ceil_mode need 9 rows to stay non-empty
    sizes = (("batch", 1), ("height", 16), ("width", 16))
    batch, height, width = (torch.export.Dim(n, min=least, max=8192) for n, least in sizes)
    has_stats = (getattr(model, "preprocessing", None) or {}).get("mean") is not None
    with eval_mode(model):
        torch.onnx.export(
            Standardized(model).eval() if has_stats else model,
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
