"""Segmenting images in applications, and exporting models for other runtimes."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.models.base import eval_mode
from zoo.preprocess import as_batch, normalize, standardize
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
        return TilePlan(
            (int(overlap),) * 2, (1, 1), False, f"{why}, so the overlap of {overlap} is unchecked"
        )
    if field.global_pool:
        raise ValueError("a classify-head model sees the whole image: it cannot be tiled")
    align = tuple(math.lcm(*(layer.jump[i] for layer in field.layers), 1) for i in range(2))
    out_stride = field.jump  # > 1: coarse logits, resized bilinearly to the input's size
    # A pooling or upsampling window sits asymmetrically around a pixel of the finer grid (which
    # coarse cells it reads depends on the pixel's parity): one step of the coarsest grid more
    # on each side; a final resize of coarse logits reads one coarse step beyond the field.
    radius = tuple(
        (field.rf[i] - 1) // 2
        + (align[i] if align[i] > 1 else 0)
        + (out_stride[i] if out_stride[i] > 1 else 0)
        for i in range(2)
    )
    wanted = radius if overlap is None else (int(overlap), int(overlap))
    if min(wanted) < 0:
        raise ValueError(f"overlap must be >= 0, found {overlap}")
    margin = tuple(-(-wanted[i] // align[i]) * align[i] for i in range(2))
    if overlap is not None and min(overlap - r for r in radius) < 0:
        return TilePlan(
            margin, align, False, f"overlap {overlap} is below the receptive-field radius {max(radius)}"
        )
    size = (height, width)
    if any(out_stride[i] > 1 and size[i] % out_stride[i] for i in range(2)):
        return TilePlan(
            margin,
            align,
            False,
            f"{type(model).__name__} computes logits at 1/{max(out_stride)} of the input and resizes "
            "them to the input's size; a tile's resize matches the whole image's only when height and "
            f"width are multiples of {max(out_stride)}, and {height}x{width} is not, so each tile is "
            "resized on its own (labels can differ near tile seams); pad the image to a multiple of "
            f"{max(out_stride)} for exact tiles",
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


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest integer type that holds labels 0..num_classes-1 (uint8 up to 256 classes)."""
    for candidate in (np.uint8, np.int16, np.int32):
        if num_classes - 1 <= np.iinfo(candidate).max:
            return np.dtype(candidate)
    return np.dtype(np.int64)


class _Outputs:
    """The image-sized results, written region by region: labels (into `out` if given), probabilities."""

    def __init__(self, shape: tuple[int, int, int], out: np.ndarray | None, probs_dtype) -> None:
        self.shape, self.labels, self.probs, self.probs_dtype = shape, out, None, probs_dtype

    def write(self, region: tuple[slice, ...], logits: torch.Tensor, return_probs: bool) -> None:
        if self.labels is None:
            self.labels = np.empty(self.shape, dtype=label_dtype(logits.shape[1]))
        elif np.iinfo(self.labels.dtype).max < logits.shape[1] - 1:
            raise ValueError(f"out= holds {self.labels.dtype}, too small for {logits.shape[1]} classes")
        self.labels[region] = logits.argmax(1).cpu().numpy()
        if return_probs:
            if self.probs is None:
                n, h, w = self.shape
                self.probs = np.empty((n, logits.shape[1], h, w), dtype=self.probs_dtype)
            i, ys, xs = region
            self.probs[i, :, ys, xs] = logits.softmax(1).cpu().numpy()


def _predict_chunk(
    model, x, rows: slice, tile, plan, tta, prepare, outputs: _Outputs, return_probs, bar
) -> None:
    """Labels (and probabilities, if asked) of images `rows`, whole or tile by tile, into `outputs`.

    Tiled, only the outputs are image-sized: each tile is normalised, run and reduced before the
    next one, so the working memory is bounded by the tile, not the image.
    """
    if tile is None:
        outputs.write((rows, slice(None), slice(None)), _scores(model, prepare(x), tta), return_probs)
        bar.update(1)
        return
    (_, _, h, w), (th, tw) = x.shape, _tile_sizes(tile, plan)
    for y0, y1, ty0, ty1 in _tiles(h, th, plan.margin[0]):
        for x0, x1, tx0, tx1 in _tiles(w, tw, plan.margin[1]):
            logits = _scores(model, prepare(x[..., ty0:ty1, tx0:tx1]), tta)
            outputs.write(
                (rows, slice(y0, y1), slice(x0, x1)),
                logits[..., y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0],
                return_probs,
            )
            bar.update(1)


BACKENDS = ("auto", "torch", "compile", "onnxruntime")
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(backend, weights): runner}


def _weights_version(model: nn.Module) -> tuple:
    # changes whenever a weight or buffer is replaced or written in place (load_state_dict, an optimizer step)
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


class _Compiled(nn.Module):
    """`torch.compile(model, dynamic=True)` (one graph for every size), falling back to `model` with
    a one-line warning if inductor cannot build a graph: compiling is lazy, so that shows only
    at a call, and the same shapes can fail or not with the batch size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.in_channels = model, getattr(model, "in_channels", 1)
        self.compiled, self.failed = torch.compile(model, dynamic=True), False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.compiled(x)
            except Exception as e:  # inductor's lowering errors have many types
                self.failed = True
                message = str(e).splitlines()[0][:200]
                warnings.warn(
                    f"backend 'compile' failed for this model ({type(e).__name__}: {message}); using 'torch'",
                    stacklevel=3,
                )
        return self.model(x)


def _build_runner(model: nn.Module, backend: str) -> nn.Module:
    if backend == "compile":
        return _Compiled(model)
    import onnxruntime  # noqa: F401  (the onnx extra; an ImportError falls back)

    folder = Path(tempfile.mkdtemp(prefix="zoo_onnx_"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(model, folder / "model.onnx", standardize=False)  # predict normalises itself
    return OnnxModel(path, source=model)


def choose_backend(model: nn.Module, backend: str, dtype: torch.dtype | None) -> str:
    """The backend `predict` runs: `backend` itself, or for "auto" the fastest measured here
    (benchmarks/predict.py): onnxruntime for fp32 on a CPU where it is installed, else PyTorch's
    own fused path (bf16 included: onnxruntime's CPU provider has no bf16 convolution).
    `ZOO_PREDICT_BACKEND=torch` (or another name) makes "auto" that backend."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, found {backend!r}")
    if backend == "onnxruntime" and dtype is not None:
        raise ValueError(
            "onnxruntime runs fp32 only (its CPU provider has no bf16 convolution): use backend='torch'"
        )
    if backend == "auto":
        backend = os.environ.get("ZOO_PREDICT_BACKEND", "auto")
        if backend not in BACKENDS:
            raise ValueError(f"ZOO_PREDICT_BACKEND must be one of {BACKENDS}, found {backend!r}")
    if backend != "auto":
        return "torch" if backend == "onnxruntime" and dtype is not None else backend
    param = next(model.parameters(), None)
    on_cpu_fp32 = param is not None and param.device.type == "cpu" and param.dtype == torch.float32
    if on_cpu_fp32 and dtype is None and not isinstance(model, OnnxModel) and _has_onnxruntime():
        return "onnxruntime"
    return "torch"


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def runner(model: nn.Module, backend: str) -> nn.Module:
    """What runs `model` on `backend` ("torch": the model itself), built once and kept while its
    weights are unchanged; a backend that cannot be built falls back to "torch" with a warning."""
    if backend == "torch":
        return model
    cache = _RUNNERS.setdefault(model, {})
    key = (backend, _weights_version(model))
    if key not in cache:
        cache.clear()  # older weights' runners
        try:
            with eval_mode(model):
                cache[key] = _build_runner(model, backend)
        except Exception as e:  # a missing package, an export the model does not support
            warnings.warn(
                f"backend {backend!r} is unavailable ({type(e).__name__}: {e}); using 'torch'", stacklevel=3
            )
            cache[key] = model
    return cache[key]


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
    out: np.ndarray | None = None,
    probs_dtype: np.dtype | type = np.float32,
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-pixel labels for images of any size, on the model's device, without gradients.

    Args:
        images: raw uint8 images in 0..255: numpy (H, W) or (N, H, W) for a grayscale model,
            (H, W, C) or (N, H, W, C) for a C-channel one, or a PIL image; they get the model's
            recorded normalisation (x / 255, then its per-channel mean/std if it has them). Or a
            float tensor that is the model's input already: (N, 1, H, W), (N, H, W) or (H, W) (a
            C-channel model: (N, C, H, W) or (C, H, W)).
        batch_size: images per forward pass.
        return_probs: also return the softmax probabilities (N, classes, H, W) in `probs_dtype`.
        dtype: torch.bfloat16 computes under bf16 autocast (weights stay fp32; on a CPU the fused
            convolutions fold batch norm in fp32, then run in bf16); None: the weights' dtype.
        tile: run the model on tiles of about this many pixels a side (rounded up to the model's
            alignment), each with `overlap` pixels of context, so the working memory is bounded by
            the tile, not the image: raw images are normalised tile by tile, and only the labels
            (and probabilities, if asked) are image-sized. The default overlap comes from
            `tile_plan`: the same labels as the whole image at once (up to float rounding); where
            that cannot hold, a warning says why.
        overlap: the context margin to use instead (smaller than the receptive-field radius: tiles
            see less than the whole image would, and a warning says so).
        tta: "flip" averages the logits of the image and of its mirror image (horizontal flip);
            it hurts on M2NIST (digits are not mirror-symmetric: `python tools/summary.py --tta`).
        progress: a progress bar over the forward passes; None: only on a terminal, and only for
            more than one pass.
        out: an integer array shaped like the labels to write them into (e.g. a `numpy.memmap`,
            so an image larger than memory can be labelled with `tile`); it is returned.
        probs_dtype: the probabilities' type (np.float16 halves their memory).
        backend: "torch" (PyTorch's fused oneDNN path), "compile" (`torch.compile`, one graph for
            every size), "onnxruntime" (the model exported by `export_onnx`, the `onnx` extra), or
            "auto": `choose_backend`. The first call of "compile" or "onnxruntime" on a model builds
            it (seconds; kept for later calls while the weights stay the same).

    Returns:
        labels shaped like the input images without channels ((H, W) or (N, H, W), also for
        N = 1), in the smallest integer type that holds the classes (`label_dtype`: uint8 up to
        256 classes), or `out`; and the probabilities on request.

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
    raw = not isinstance(images, torch.Tensor)
    x, single = as_batch(images, getattr(model, "in_channels", 1), scale=not raw)
    if dtype not in (None, torch.bfloat16):
        raise ValueError(f"dtype must be None (the weights' dtype) or torch.bfloat16, found {dtype}")
    n, _, h, w = x.shape
    if out is not None:
        wanted = (h, w) if single else (n, h, w)
        if tuple(out.shape) != wanted or not np.issubdtype(out.dtype, np.integer):
            raise ValueError(
                f"out= must be an integer array of shape {wanted}, found {out.dtype} {tuple(out.shape)}"
            )
        classes = getattr(model, "num_classes", None)
        if classes is not None and np.iinfo(out.dtype).max < classes - 1:
            raise ValueError(f"out= holds {out.dtype}, too small for {classes} classes")
    source = model
    model = runner(model, choose_backend(model, backend, dtype))
    plan = None
    if tile is not None:
        plan = tile_plan(source, h, w, overlap)
        if not plan.exact:
            warnings.warn(f"tiled inference is not exact here: {plan.reason}", stacklevel=2)
    param = next(model.parameters(), None)
    if param is None:  # a module without weights of its own (OnnxModel): CPU, fp32 input
        param = torch.empty(0)
    preprocessing = getattr(source, "preprocessing", None) if raw else None

    def prepare(part: torch.Tensor) -> torch.Tensor:
        # raw images: x / 255 and the model's recorded statistics, here, one batch or tile at a time
        if raw:
            part = standardize(normalize(part), preprocessing)
        return part.to(param.device, param.dtype)

    autocast = torch.autocast(param.device.type, dtype=torch.bfloat16, enabled=dtype is not None)
    steps = -(-n // batch_size)
    if tile is not None:
        th, tw = _tile_sizes(tile, plan)
        steps *= -(-h // th) * -(-w // tw)
    bar = progress_bar(
        total=steps, desc="predict", show=progress if progress is not None or steps > 1 else False
    )
    outputs = _Outputs((n, h, w), None if out is None else out.reshape(n, h, w), probs_dtype)
    with bar, eval_mode(source), torch.inference_mode(), autocast:
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            _predict_chunk(model, x[rows], rows, tile, plan, tta, prepare, outputs, return_probs, bar)
    labels = out if out is not None else (outputs.labels[0] if single else outputs.labels)
    if not return_probs:
        return labels
    return labels, (outputs.probs[0] if single else outputs.probs)


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
    model: nn.Module,
    path: str | Path,
    opset: int = 18,
    example_size: tuple[int, int] = (64, 84),
    standardize: bool = True,
) -> Path:
    """Write `model` in eval mode as ONNX with dynamic batch, height and width ("images" -> "logits").

    Heights and widths from 16 to 8192 pixels. The graph takes x / 255 images: a model trained
    with per-channel statistics (`model.preprocessing`) has them applied inside the graph
    (`standardize=False`: the graph takes the model's own input).

    The model is handed back in the mode it came in.
    """
    path = Path(path)
    example = torch.rand(2, getattr(model, "in_channels", 1), *example_size)
    # at least 16x16: three 2x2 max pools with ceil_mode need 9 rows to stay non-empty
    sizes = (("batch", 1), ("height", 16), ("width", 16))
    batch, height, width = (torch.export.Dim(n, min=least, max=8192) for n, least in sizes)
    has_stats = standardize and (getattr(model, "preprocessing", None) or {}).get("mean") is not None
    with eval_mode(model), _without_torchvision_notices():
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


@contextlib.contextmanager
def _without_torchvision_notices() -> Iterator[None]:
    """Mute the exporter's warning per torchvision operator when torchvision is absent (zoo uses none)."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
