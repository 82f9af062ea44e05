"""Speed and memory of every registered model: `python benchmarks/run.py [--models PATTERN ...]`.

Per model and input size it measures inference and training-step (forward, backward, AdamW)
images/s, the activations a training step saves for backward (and the process's peak memory growth),
parameters, multiply-accumulates per image (counted
with torch.utils.flop_counter), and the achieved FLOP/s as a fraction of the machine's own peak,
measured in the same process as a large matrix product in the same dtype. Each timing: warm-up runs, then
`--reps` repetitions; the median is reported with the min-max spread. Writes a JSON file and
prints a markdown table. CPU always, in fp32 and, where the processor has bf16 instructions,
in bf16 autocast (each row against the matmul peak of its own precision; on a CPU without them
the bf16 rows are skipped rather than timing emulation); CUDA too when present (bf16 autocast,
channels_last, torch.compile off and on).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import zoo  # noqa: E402
from zoo.cpu import has_bf16, keep_freed_memory  # noqa: E402

SIZES = {
    "64x84": (32, 64, 84),
    "256x256": (1, 256, 256),
    "512x512": (1, 512, 512),
    "1024x1024": (1, 1024, 1024),
}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, warmup: int, reps: int, min_seconds: float = 0.25) -> list[float]:
    """Seconds per call, `reps` times after `warmup` calls.

    Each repetition calls `fn` until `min_seconds` have passed and reports the mean per call, so
    short calls (inference at 64x84) are timed over a window long enough to be steady.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        times.append(elapsed / calls)
    return times


def write_json(path: str | Path, payload: dict) -> None:
    """Write a benchmark's results (creating the folder) and say where."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of an n x n matrix product in `dtype`: the machine's practical peak.

    The same product two ways, the faster kept: `torch.matmul` (the BLAS library) and a 1x1
    convolution (oneDNN on a CPU, cuDNN on a GPU). On an AMD CPU, MKL's fp32 matmul runs a slow
    path (146 GFLOP/s here against 328 through oneDNN), which would put convolutions above 100%.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    x = torch.randn(1, n, 1, n, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    best = min(
        min(timed(lambda: a @ b, device, warmup=3, reps=reps)),
        min(timed(lambda: torch.nn.functional.conv2d(x, w), device, warmup=3, reps=reps)),
    )
    return 2 * n**3 / best  # a peak: the best window, not the typical one


PEAK_MATMULS = {  # key in a row's peak lookup: (device, dtype, matrix side)
    "cpu": ("cpu", torch.float32, 2048),
    "cpu-bf16": ("cpu", torch.bfloat16, 2048),
    "cuda": ("cuda", torch.float32, 8192),
    "cuda-bf16": ("cuda", torch.bfloat16, 8192),
}


def measure_peaks(devices: list[str], bf16_cpu: bool, quick: bool = False) -> dict[str, float]:
    """The matmul peak of every device (and dtype) in `devices`; CPU bf16 only if `bf16_cpu`.

    Args:
        quick: a 256 x 256 product, twice: a smoke run's rough figure, not a peak.
    """
    return {
        key: matmul_peak(dev, dtype, n=256, reps=2) if quick else matmul_peak(dev, dtype, n=n)
        for key, (dev, dtype, n) in PEAK_MATMULS.items()
        if dev in devices and (key != "cpu-bf16" or bf16_cpu)
    }


def macs_per_image(model: torch.nn.Module, h: int, w: int) -> int:
    """Multiply-accumulates of one forward pass on one (1, C, h, w) image."""
    x = torch.rand(1, model.in_channels, h, w)
    # autograd on: the plain module path (the fused CPU inference kernel is invisible to the counter)
    with FlopCounterMode(display=False) as counter, torch.enable_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def saved_activation_bytes(step) -> int:
    """Bytes autograd keeps for the backward pass during `step()`'s forward (each storage once).

    Device independent, and the memory that grows with the pixel count; activation
    checkpointing shrinks it to the blocks' inputs.
    """
    seen: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.layout == torch.strided:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def summarize(times: list[float], images: int) -> dict:
    rates = sorted(images / t for t in times)
    return {"images_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1], "reps": len(rates)}


def interleaved(
    fns: list, device: str, warmup: int, reps: int, min_seconds: float = 0.25
) -> list[list[float]]:
    """`timed` for several calls at once, taking turns: repetition r of each runs back to back.

    On a shared host the speed drifts over minutes; taking turns puts every call's r-th
    repetition in the same stretch of time, so ratios between them (bf16 against fp32) hold.
    """
    for fn in fns:
        timed(fn, device, warmup, 0)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, times):
            out += timed(fn, device, 0, 1, min_seconds)
    return times


def _workload(name: str, size: str, device: str, mode: dict) -> tuple[torch.nn.Module, object, object]:
    """The model of one row, as the row's mode runs it, with its inference and training-step calls."""
    batch, h, w = SIZES[size]
    model = zoo.create_model(name).to(device)
    if mode.get("grad_checkpointing"):
        model.set_grad_checkpointing()
    if mode.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if mode.get("compile") else model
    x = torch.rand(batch, model.in_channels, h, w, device=device)
    if mode.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (batch, h, w), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=mode.get("bf16", False))

    def infer():
        model.eval()
        with torch.inference_mode(), autocast:
            run(x)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(run(x), y)
        loss.backward()
        opt.step()

    return model, infer, train_step


def bench_model(
    name: str, size: str, device: str, modes: list[dict], warmup: int, reps: int, min_seconds: float = 0.25
) -> list[dict]:
    """One row per mode: inference and training throughput, memory and FLOP use of `name` at `size`.

    The modes' inference calls are timed taking turns (`interleaved`), then their training
    steps; a bf16 row also gets its speed-up over the fp32 row as the median of the ratios of
    same-turn repetitions.
    """
    batch, h, w = SIZES[size]
    loads = [_workload(name, size, device, mode) for mode in modes]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    infer_times = interleaved([infer for _, infer, _ in loads], device, warmup, reps, min_seconds)
    train_times = interleaved([step for _, _, step in loads], device, warmup, reps, min_seconds)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:  # process high-water mark: exact only for the first (largest-growing) model run
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before)
    macs = macs_per_image(zoo.create_model(name), h, w)
    fp32 = next((i for i, mode in enumerate(modes) if not mode), None)
    rows = []
    for i, (mode, (model, _, train_step)) in enumerate(zip(modes, loads)):
        inference, training = summarize(infer_times[i], batch), summarize(train_times[i], batch)
        row = {
            "model": name,
            "size": size,
            "batch": batch,
            "device": device,
            **{k: v for k, v in mode.items() if v},
            "parameters": zoo.count_parameters(model),
            "macs_per_image": macs,
            "inference": inference,
            "training": training,
            "peak_memory_mb": round(peak / 2**20, 1),
            "saved_activations_mb": round(saved_activation_bytes(train_step) / 2**20, 1),
            "inference_flops": 2 * macs * inference["images_per_s"],
            "training_flops": 3 * 2 * macs * training["images_per_s"],
        }
        if mode.get("bf16") and fp32 is not None:
            row["speedup_vs_fp32"] = {
                part: statistics.median(a / b for a, b in zip(times[fp32], times[i]))
                for part, times in (("inference", infer_times), ("training", train_times))
            }
        rows.append(row)
    return rows


def fmt(v: float) -> str:
    """Images/s for a table: whole numbers from 100 up, three significant digits below."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def markdown(rows: list[dict], peaks: dict) -> str:
    head = (
        "| model | size | device / mode | params | MMAC/img | infer img/s (min-max) | % peak "
        "| train img/s (min-max) | % peak | saved for backward MB "
        "|\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        peak = peaks[r["device"] + ("-bf16" if r.get("bf16") else "")]
        keys = ("bf16", "channels_last", "compile", "grad_checkpointing")
        mode = r["device"] + "".join(f" {k}" for k in keys if r.get(k))
        i, t = r["inference"], r["training"]
        lines.append(
            f"| `{r['model']}` | {r['size']} x{r['batch']} | {mode} | {r['parameters']:,} | "
            f"{r['macs_per_image'] / 1e6:.1f} | {fmt(i['images_per_s'])} ({fmt(i['min'])}-{fmt(i['max'])}) | "
            f"{100 * r['inference_flops'] / peak:.0f}% "
            f"| {fmt(t['images_per_s'])} ({fmt(t['min'])}-{fmt(t['max'])}) | "
            f"{100 * r['training_flops'] / peak:.0f}% | {r['saved_activations_mb']} |"
        )
    return "\n".join(lines)


def speedups(rows: list[dict]) -> str:
    """The bf16 rows' speed-ups over fp32 (same-turn repetitions, see `bench_model`) as a markdown table."""
    lines = ["| model | size | bf16 / fp32 inference | bf16 / fp32 training step |", "|---|---|---:|---:|"]
    for r in rows:
        if "speedup_vs_fp32" in r:
            up = r["speedup_vs_fp32"]
            lines.append(
                f"| `{r['model']}` | {r['size']} x{r['batch']} | {up['inference']:.2f}x | "
                f"{up['training']:.2f}x |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def main(argv: list[str] | None = None) -> int:
    from machine import cpu_model  # benchmarks/machine.py, beside this script

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["*"], help="fnmatch patterns (default: all)")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument(
        "--devices", nargs="*", default=None, help="cpu, cuda (default: cpu, and cuda if present)"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default="benchmarks/results.json")
    parser.add_argument("--render", metavar="JSON", help="only print the table of an earlier run")
    parser.add_argument(
        "--grad-checkpointing", action="store_true", help="also rows with activation checkpointing"
    )
    parser.add_argument("--compile", action="store_true", help="also CPU rows with torch.compile")
    parser.add_argument(
        "--no-bf16", action="store_true", help="no CPU bf16 rows, even where the CPU has bf16"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one call per timing and a small matmul peak (no real figures)",
    )
    args = parser.parse_args(argv)
    keep_freed_memory()  # as train.py does: docs/benchmarks.md says why
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        print(markdown(saved["rows"], saved["machine"]["matmul_peak_flops"]))
        print("\n" + speedups(saved["rows"]))
        return 0
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    bf16_cpu = "cpu" in devices and not args.no_bf16 and has_bf16()
    if "cpu" in devices and not args.no_bf16 and not bf16_cpu:
        print("this CPU has no bf16 instructions (AVX512-BF16 or AMX): CPU bf16 rows skipped")
    peaks = measure_peaks(devices, bf16_cpu, args.quick)
    modes = {"cpu": [{}] + ([{"bf16": True}] if bf16_cpu else [])}
    if args.grad_checkpointing:
        modes["cpu"].append({"grad_checkpointing": True})
    if args.compile:  # needs a C++ compiler; compile time is spent in the warm-up, not timed
        modes["cpu"].append({"compile": True})
    modes["cuda"] = [
        {"bf16": True, "channels_last": True},
        {"bf16": True, "channels_last": True, "compile": True},
    ]
    rows = []
    for name in zoo.list_models(args.models):
        for size in args.sizes:
            for device in devices:
                sequential = isinstance(zoo.create_model(name).features, torch.nn.Sequential)
                runnable = [m for m in modes[device] if sequential or not m.get("grad_checkpointing")]
                new = bench_model(
                    name, size, device, runnable, args.warmup, args.reps, 0.0 if args.quick else 0.25
                )
                rows += new
                print("\n".join(markdown(new, peaks).splitlines()[2:]), flush=True)
    machine = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_bf16_instructions": has_bf16(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
        "matmul_peak_flops": peaks,
    }
    # once more at the end, keeping the higher: on a shared host one measurement can land in a
    # slow spell, and a low peak would flatter every row
    again = measure_peaks(devices, bf16_cpu, args.quick)
    peaks.update({key: max(peaks[key], value) for key, value in again.items()})
    print(f"\nmachine: {machine}\n")
    print(markdown(rows, peaks) + "\n")
    print(speedups(rows) + "\n")
    write_json(args.json, {"machine": machine, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
