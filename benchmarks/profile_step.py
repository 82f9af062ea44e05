"""Where a CPU training step's time goes: `python benchmarks/profile_step.py [--model vgg4_dilated] [--bf16]`.

Three measurements of one model as `create_model` returns it (64x84, batch 32, AdamW; with
`--bf16` under bf16 autocast as `train.py` runs it), printed as tables and written to JSON:

- the step's operators by self time (torch.profiler), grouped into convolution, batch norm,
  ReLU and the rest;
- an ablation: the step with batch norm + ReLU removed, which bounds what a fused
  batch-norm + ReLU kernel could win;
- batch-norm backward alone per channel count, channels_last against NCHW (the layer widths,
  and 64 and 96 for reference), in milliseconds and per element.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # zoo from this checkout; run.py beside this script

from run import macs_per_image, matmul_peak, timed, write_json  # noqa: E402

import zoo  # noqa: E402
from zoo.cpu import has_bf16, keep_freed_memory  # noqa: E402

GROUPS = {
    "convolution": ("convolution",),
    "batch norm": ("batch_norm",),
    "relu": ("threshold_backward", "relu", "clamp_min"),
    "loss": ("log_softmax", "nll_loss"),
}


def make_step(model: nn.Module, batch: int, h: int, w: int, bf16: bool = False, forward=None):
    """A closure running one training step (forward, cross-entropy, backward, AdamW).

    Args:
        forward: computes the logits from the input in place of `model(x)` (another path
            through the same model).
    """
    x = torch.rand(batch, model.in_channels, h, w)
    y = torch.randint(0, model.num_classes, (batch, h, w))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = model if forward is None else forward

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()

    return step


def op_breakdown(step, steps: int = 5) -> dict[str, float]:
    """Milliseconds per step of each operator group (self CPU time of aten ops)."""
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals = dict.fromkeys([*GROUPS, "other"], 0.0)
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        group = next((g for g, keys in GROUPS.items() if any(k in event.key for k in keys)), "other")
        totals[group] += event.self_cpu_time_total / 1e3 / steps
    return totals


def without_norm_and_relu(model: nn.Module) -> nn.Module:
    """The same model with every BatchNorm2d and ReLU replaced by the identity."""
    for name, child in model.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.ReLU)):
            setattr(model, name, nn.Identity())
        else:
            without_norm_and_relu(child)
    return model


def bn_backward_ms(
    channels: int, batch: int, h: int, w: int, fmt: torch.memory_format, reps: int = 5, dtype=torch.float32
) -> float:
    """Median milliseconds of one batch-norm backward (training statistics) in layout `fmt`."""
    x = torch.randn(batch, channels, h, w, dtype=dtype).contiguous(memory_format=fmt)
    g = torch.randn_like(x)
    weight, bias = torch.ones(channels), torch.zeros(channels)
    mean, var = torch.zeros(channels), torch.ones(channels)
    _, save_mean, save_invstd = torch.native_batch_norm(x, weight, bias, mean, var, True, 0.1, 1e-5)

    def backward() -> None:
        torch.ops.aten.native_batch_norm_backward(
            g, x, weight, mean, var, save_mean, save_invstd, True, 1e-5, [True, True, True]
        )

    return 1e3 * statistics.median(timed(backward, "cpu", warmup=2, reps=reps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg4_dilated")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, against the bf16 matmul peak")
    parser.add_argument("--json", default=None, help="default benchmarks/profile_step[_bf16].json")
    args = parser.parse_args(argv)
    if args.bf16 and not has_bf16():
        print("this CPU has no bf16 instructions (AVX512-BF16 or AMX): nothing to profile in bf16")
        return 1
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    json_path = args.json or f"benchmarks/profile_step{'_bf16' if args.bf16 else ''}.json"
    keep_freed_memory()  # as train.py does: docs/benchmarks.md says why
    batch, h, w, reps = args.batch, 64, 84, args.reps

    model = zoo.create_model(args.model).train()
    step = make_step(model, batch, h, w, args.bf16)
    groups = op_breakdown(step)
    step_ms = 1e3 * statistics.median(timed(step, "cpu", warmup=2, reps=reps))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 5
    bare = make_step(without_norm_and_relu(zoo.create_model(args.model)).train(), batch, h, w, args.bf16)
    bare_ms = 1e3 * statistics.median(timed(bare, "cpu", warmup=2, reps=reps))
    # the model's widths, and multiples of 32 for reference: per element, PyTorch 2.13's bf16
    # channels_last kernels are several times slower at widths that are not
    widths = sorted({m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)} | {64, 96})
    bn = {}
    for c in widths:
        last = bn_backward_ms(c, batch, h, w, torch.channels_last, reps, dtype)
        nchw = bn_backward_ms(c, batch, h, w, torch.contiguous_format, reps, dtype)
        elements = batch * c * h * w
        bn[c] = {
            "channels_last_ms": last,
            "nchw_ms": nchw,
            "channels_last_ns_per_element": 1e6 * last / elements,
            "nchw_ns_per_element": 1e6 * nchw / elements,
        }

    peak = matmul_peak("cpu", dtype)
    train_flops = 3 * 2 * macs_per_image(zoo.create_model(args.model), h, w) * batch  # per step

    dtype_name = "bf16" if args.bf16 else "fp32"

    def share(ms: float) -> str:
        return f"{ms:.1f} ms = {100 * train_flops / (ms / 1e3) / peak:.0f}% of the {dtype_name} matmul peak"

    print(
        f"{args.model}, 64x84 batch {batch}, {torch.get_num_threads()} threads, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}"
    )
    print(f"\nstep {share(step_ms)}; without batch norm and ReLU {share(bare_ms)}")
    print(f"minor page faults per step: {faults_per_step:.0f} (ZOO_KEEP_FREED_MEMORY=0 to compare)\n")
    print("| operators (profiler, self time) | ms per step |\n|---|---:|")
    for name, ms in groups.items():
        print(f"| {name} | {ms:.1f} |")
    print(
        "\n| batch-norm backward, channels | channels_last ms | NCHW ms | channels_last ns/element |", end=""
    )
    print(" NCHW ns/element |\n|---:|---:|---:|---:|---:|")
    for c, r in bn.items():
        print(
            f"| {c} | {r['channels_last_ms']:.2f} | {r['nchw_ms']:.2f} "
            f"| {r['channels_last_ns_per_element']:.2f} | {r['nchw_ns_per_element']:.2f} |"
        )
    write_json(
        json_path,
        {
            "model": args.model,
            "batch": batch,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "precision": "bf16 autocast" if args.bf16 else "fp32",
            "step_ms": step_ms,
            "step_without_norm_relu_ms": bare_ms,
            "matmul_peak_flops": peak,
            "training_flops_per_step": train_flops,
            "minor_page_faults_per_step": faults_per_step,
            "operator_ms_per_step": groups,
            "bn_backward": bn,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
