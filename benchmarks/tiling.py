"""Large images, whole against tiled: `python benchmarks/tiling.py [--json benchmarks/tiling.json]`.

For vgg4_dilated and vgg7_dilated_context (shipped weights, fp32, CPU): batch-1 latency at
64x84, then seconds per image, megapixels per second and peak memory growth at 512x512,
2048x2048 and 4096x4096, for `zoo.predict` on the whole image and with `tile=512` (exact: the
same labels). Every measurement runs in a fresh process, so its peak resident memory
(`ru_maxrss`) belongs to that measurement alone; growth is counted from after the model, the
input and a small warm-up call.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("vgg4_dilated", "vgg7_dilated_context")
SIZES = (512, 2048, 4096)
TILE = 512


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(name: str, size: int, tile: int | None, reps: int) -> dict:
    """One measurement, in this process: seconds per call and peak memory growth."""
    import torch

    import zoo
    from zoo.cpu import keep_freed_memory

    keep_freed_memory()  # as train.py does: docs/benchmarks.md says why
    torch.manual_seed(0)
    model = zoo.create_model(name, pretrained=True)
    x = torch.rand(1, 1, size, size)
    zoo.predict(model, torch.rand(1, 1, 64, 84), tile=tile)  # warm-up: oneDNN kernels, allocator
    base = rss_bytes()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        zoo.predict(model, x, tile=tile)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "model": name,
        "size": size,
        "tile": tile,
        "seconds": round(seconds, 4),
        "megapixels_per_s": round(size * size / seconds / 1e6, 3),
        "peak_growth_mb": round(max(0, rss_bytes() - base) / 2**20, 1),
        "reps": reps,
    }


def latency(name: str, reps: int = 50) -> dict:
    """Batch-1 latency at 64x84 (median and 90th percentile over `reps` calls)."""
    import torch

    import zoo

    model = zoo.create_model(name, pretrained=True)
    x = torch.rand(1, 1, 64, 84)
    for _ in range(5):
        zoo.predict(model, x)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        zoo.predict(model, x)
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "model": name,
        "median_ms": round(1e3 * statistics.median(times), 2),
        "p90_ms": round(1e3 * times[int(0.9 * reps)], 2),
    }


def in_fresh_process(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(latencies: list[dict], rows: list[dict]) -> str:
    lines = ["| model | batch-1 latency at 64x84 (median / p90) |", "|---|---:|"]
    lines += [f"| `{r['model']}` | {r['median_ms']} / {r['p90_ms']} ms |" for r in latencies]
    lines += [
        "",
        "| model | image | whole or tiled | s / image | Mpx/s | peak memory growth |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        how = f"tiles of {r['tile']}" if r["tile"] else "whole"
        lines.append(
            f"| `{r['model']}` | {r['size']}x{r['size']} | {how} | {r['seconds']:.3f} | "
            f"{r['megapixels_per_s']:.2f} | {r['peak_growth_mb']:,.0f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from machine import describe  # benchmarks/machine.py, beside this script

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "SIZE", "TILE"), help=argparse.SUPPRESS)
    parser.add_argument("--latency", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # a child process: one measurement, printed as JSON
        name, size, tile = args.one[0], int(args.one[1]), int(args.one[2]) or None
        print(json.dumps(measure(name, size, tile, reps=3 if size <= 512 else 1)))
        return
    if args.latency:
        print(json.dumps(latency(args.latency)))
        return
    latencies = [in_fresh_process("--latency", name) for name in MODELS]
    rows = [
        in_fresh_process("--one", name, str(size), str(tile))
        for name in MODELS
        for size in SIZES
        for tile in (0, TILE)
    ]
    print(markdown(latencies, rows))
    if args.json:
        machine = describe()
        args.json.write_text(
            json.dumps({"machine": machine, "latency": latencies, "rows": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
