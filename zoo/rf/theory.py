"""Theoretical receptive fields, traced from the model's own graph with torch.fx.
Layer by layer from the input (Luo et al., 2016; shared/reference/FACTS.md):
jump_out = jump_in * stride and rf_out = rf_in + (kernel - 1) * dilation * jump_in,
starting from jump = rf = 1. Where branches meet (a residual add) the larger field wins.
A ShiftStitch counts as a k x k pooling whose stride multiplies the jump only inside its body:
its output is back at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

from zoo.layers.pool import BoxMean
from zoo.layers.shift_stitch import ShiftStitch
from zoo.models.base import ZooModel

Pair = tuple[int, int]


@dataclass(frozen=True)
class RFLayer:
    """One layer's row: what it does and the field after it (height, width)."""

    name: str
    kind: str
    kernel: Pair
    stride: Pair
    dilation: Pair
    jump: Pair
    rf: Pair


@dataclass(frozen=True)
class ReceptiveField:
    """A per-layer receptive-field table; `.size` is the final field (an int when square)."""

    layers: list[RFLayer]
    rf: Pair
    jump: Pair
    global_pool: bool = False

    @property
    def size(self) -> int | Pair:
        return self.rf[0] if self.rf[0] == self.rf[1] else self.rf

    def __str__(self) -> str:
        def fmt(p: Pair) -> str:
            return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"

        header = ("layer", "type", "kernel", "stride", "dilation", "jump", "receptive field")
        rows = [header] + [
            (r.name, r.kind, fmt(r.kernel), fmt(r.stride), fmt(r.dilation), fmt(r.jump), fmt(r.rf))
            for r in self.layers
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        tail = f"receptive field {fmt(self.rf)}"
        if self.global_pool:
            tail += " (then global average pooling: the classifier sees the whole image)"
        return "\n".join(lines + [tail])


def _pair(v) -> Pair:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, ShiftStitch, BoxMean)) or super().is_leaf_module(m, qualname)


_STATE = tuple[Pair, Pair]  # (rf, jump)


def _trace(module: nn.Module, prefix: str, state: _STATE, rows: list[RFLayer]) -> _STATE:
    graph = _LeafTracer().trace(module)
    submodules = dict(module.named_modules())
    states: dict[fx.Node, _STATE] = {}
    out = state
    for node in graph.nodes:
        inputs = [states[a] for a in node.all_input_nodes if a in states]
        if node.op == "placeholder":
            states[node] = state
            continue
        if node.op == "output":
            out = inputs[0]
            break
        if not inputs:
            continue
        rf = (max(s[0][0] for s in inputs), max(s[0][1] for s in inputs))
        jump = inputs[0][1]
        if node.op == "call_module":
            m = submodules[node.target]
            name = f"{prefix}{node.target}"
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                k, s = _pair(m.kernel_size), _pair(m.stride)
                d = _pair(getattr(m, "dilation", 1))
                rf = tuple(rf[i] + (k[i] - 1) * d[i] * jump[i] for i in range(2))
                kind = "conv" if isinstance(m, nn.Conv2d) else type(m).__name__.replace("2d", "").lower()
                if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
                    kind = "conv dw"
                jump = tuple(jump[i] * s[i] for i in range(2))
                rows.append(RFLayer(name, kind, k, s, d, jump, rf))
            elif isinstance(m, (nn.Upsample, nn.ConvTranspose2d)):
                # an output reads `taps` inputs per axis at the coarse spacing, then spacing shrinks
                if isinstance(m, nn.Upsample):
                    s = _pair(int(m.scale_factor))
                    taps = (2, 2) if m.mode in ("bilinear", "bicubic") else (1, 1)
                    kind, k = f"upsample {m.mode}", s
                else:
                    s, k = _pair(m.stride), _pair(m.kernel_size)
                    taps = tuple(-(-k[i] // s[i]) for i in range(2))
                    kind = "conv transpose"
                rf = tuple(rf[i] + (taps[i] - 1) * jump[i] for i in range(2))
                jump = tuple(max(1, jump[i] // s[i]) for i in range(2))
                rows.append(RFLayer(name, kind, k, s, (1, 1), jump, rf))
            elif isinstance(m, ShiftStitch):
                k = m.kernel_size
                rf = tuple(rf[i] + (k - 1) * jump[i] for i in range(2))
                inner_jump = tuple(j * k for j in jump)
                rows.append(RFLayer(name, "stitch pool", (k, k), (k, k), (1, 1), inner_jump, rf))
                rf, _ = _trace(m.body, f"{name}.body.", (rf, inner_jump), rows)
                # stitched back: the output is at full resolution again
            states[node] = (rf, jump)
        else:
            # elementwise ops (add, relu, cat, ...) keep the widest field of their inputs
            states[node] = (rf, jump)
    return out


def receptive_field(model: nn.Module) -> ReceptiveField:
    """The theoretical receptive field of `model`'s output units, with a per-layer table.

    For a zoo model it traces `features` then the head (a pixel head's 1x1 conv adds nothing;
    a classify head pools globally). Any other module is traced whole.
    """
    rows: list[RFLayer] = []
    start: _STATE = ((1, 1), (1, 1))
    if isinstance(model, ZooModel):
        rf, jump = _trace(model.features, "features.", start, rows)
        global_pool = model.head_type == "classify"
        if not global_pool:
            rf, jump = _trace(model.head, "head.", (rf, jump), rows)
        return ReceptiveField(rows, rf, jump, global_pool)
    rf, jump = _trace(model, "", start, rows)
    return ReceptiveField(rows, rf, jump)
