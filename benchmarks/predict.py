"""`zoo.predict` on each backend against onnxruntime: `python benchmarks/predict.py [--models ...]`.

For each full-resolution model with shipped weights: PyTorch's fused path (fp32 and bf16),
`torch.compile` (fp32 and bf16, dynamic shapes) and onnxruntime (fp32, the zoo's own exported graph), all
through `zoo.predict(..., backend=...)` on uint8 images, at 64x84 batch 32, 512x512 batch 1 and
2048x2048 in tiles of 512. In one process the modes take turns, repetition by repetition; each
figure is the median images/s and its ratio to onnxruntime fp32's median from the same turns.
First-call latency: the first call on a fresh model (building the compiled graph or the ONNX
session included). Peak memory growth: each mode alone in a child process, of one call after the
first, from `VmHWM` reset through /proc/self/clear_refs. Then vgg4_dilated on an 8192x8192
image in tiles of 512, in a child process: peak memory growth (`VmHWM`) and whether its labels
equal the whole-image labels on a crop.
Written as a table and to JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "onnxruntime fp32": {"backend": "onnxruntime"},
    "torch fp32": {"backend": "torch"},
    "torch bf16": {"backend": "torch", "bf16": True},
    "compile fp32": {"backend": "compile"},
    "compile bf16": {"backend": "compile", "bf16": True},
}
CASES = {
    "64x84 x32": (32, 64, 84, None),
    "512x512 x1": (1, 512, 512, None),
    "2048x2048 tiled": (1, 2048, 2048, 512),
}

BIG = r"""
import json, sys
import numpy as np, torch
import zoo
from zoo.cpu import keep_freed_memory

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

keep_freed_memory()
size, tile = int(sys.argv[1]), int(sys.argv[2])
model = zoo.create_model("vgg4_dilated", pretrained=True)
image = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
zoo.predict(model, image[:600, :600], tile=tile, backend="torch")  # warm-up: kernels, allocator
base = hwm_mb()  # the image and the model are in memory already
labels = zoo.predict(model, image, tile=tile, backend="torch")
growth = hwm_mb() - base
crop = image[:700, :900]  # the whole-image labels of a crop that fits, against the tiled ones
tiled_crop = zoo.predict(model, crop, tile=tile, backend="torch")
same = bool((zoo.predict(model, crop, backend="torch") == tiled_crop).all())
print(json.dumps({"peak_growth_mb": growth, "labels_dtype": str(labels.dtype), "crop_equal": same}))
"""


# One mode alone in a fresh process: the first call builds the backend, the second is measured
# from a reset high-water mark, so the figure is that call's own (no other mode's buffers, no
# allocator cache: freed memory goes back to the OS, as glibc does by default).
MODE_MEMORY = r"""
import json, sys
import numpy as np, torch
import zoo

def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

name, backend, bf16 = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
batch, h, w, tile = (int(v) for v in sys.argv[4:8])
images = np.random.default_rng(0).integers(0, 256, (batch, h, w), dtype=np.uint8)
model = zoo.create_model(name, pretrained=True).eval()
call = lambda: zoo.predict(model, images, tile=tile or None, backend=backend,
                           dtype=torch.bfloat16 if bf16 else None)
call()  # builds the backend
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := current RSS (Linux 4.0+)
base = status_mb("VmRSS")
call()
print(json.dumps({"peak_growth_mb": status_mb("VmHWM") - base}))
"""


def mode_peak_growth_mb(name: str, case: str, mode: str) -> float:
    """Peak resident memory growth of one `zoo.predict` call in `mode`, alone in a child process."""
    spec, (batch, h, w, tile) = MODES[mode], CASES[case]
    args = [name, spec["backend"], "1" if spec.get("bf16") else "0", batch, h, w, tile or 0]
    done = subprocess.run(
        [sys.executable, "-c", MODE_MEMORY, *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} {case} {mode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_growth_mb"]


def run_modes(name: str, reps: int) -> list[dict]:
    import numpy as np
    import torch

    import zoo

    rows = []
    for case, (batch, h, w, tile) in CASES.items():
        images = np.random.default_rng(0).integers(0, 256, (batch, h, w), dtype=np.uint8)
        models, first = {}, {}
        for mode, spec in MODES.items():
            models[mode] = zoo.create_model(name, pretrained=True).eval()  # fresh: the first call builds
            start = time.perf_counter()
            calls = lambda m=models[mode], s=spec, x=images, t=tile: zoo.predict(  # noqa: E731
                m, x, tile=t, backend=s["backend"], dtype=torch.bfloat16 if s.get("bf16") else None
            )
            reference = calls()
            first[mode] = time.perf_counter() - start
            if mode == "onnxruntime fp32":
                plain = reference
            agree = float((reference == plain).mean())
            rows.append(
                {
                    "model": name,
                    "case": case,
                    "mode": mode,
                    "first_call_s": round(first[mode], 2),
                    "agree": agree,
                }
            )
            models[mode] = calls
        times = {mode: [] for mode in MODES}
        for _ in range(reps):
            for mode in MODES:
                start = time.perf_counter()
                models[mode]()
                times[mode].append(time.perf_counter() - start)
        ort = statistics.median(times["onnxruntime fp32"])
        for row in rows[-len(MODES) :]:
            row["peak_growth_mb"] = round(mode_peak_growth_mb(name, case, row["mode"]), 1)
            seconds = statistics.median(times[row["mode"]])
            row["images_per_s"] = round(batch / seconds, 2)
            row["vs_onnxruntime"] = round(ort / seconds, 2)
        print(
            f"{name} {case}: "
            + ", ".join(f"{r['mode']} {r['vs_onnxruntime']}x" for r in rows[-len(MODES) :]),
            flush=True,
        )
    return rows


def main() -> None:
    from machine import describe  # benchmarks/machine.py, beside this script

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", help="default: every shipped full-resolution model")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--big", type=int, default=8192, help="side of the tiled large image")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "predict.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.models is None:
        import zoo

        args.models = [n for n in zoo.list_models(pretrained=True) if zoo.create_model(n).full_resolution]

    # no zoo.cpu.keep_freed_memory() here: memory freed by one call goes back to the OS, so the
    # next call's peak growth is its own (the ratios compare modes under the same setting)
    rows = [row for name in args.models for row in run_modes(name, args.reps)]
    done = subprocess.run(
        [sys.executable, "-c", BIG, str(args.big), "512"], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    big = {"size": args.big, "tile": 512, **json.loads(done.stdout.strip().splitlines()[-1])}
    result = {
        "command": "python benchmarks/predict.py " + " ".join(sys.argv[1:]),
        "machine": describe(),
        "reps": args.reps,
        "rows": rows,
        "tiled_large_image": big,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))


def format_table(result: dict) -> str:
    """The docs' table from the JSON: onnxruntime fp32's images/s, each other mode as a ratio to it."""
    modes = [m for m in MODES if m != "onnxruntime fp32"]
    lines = [
        "| model | input | onnxruntime fp32 img/s | " + " | ".join(modes) + " | first call s: "
        + " / ".join(MODES) + " | peak growth MB, same order | fewest labels equal to onnxruntime's |",
        "|---|---|---:|" + "---:|" * len(modes) + "---:|---:|---:|",
    ]  # fmt: skip
    cells = {(r["model"], r["case"], r["mode"]): r for r in result["rows"]}
    for model, case in dict.fromkeys((r["model"], r["case"]) for r in result["rows"]):
        row = {m: cells.get((model, case, m)) for m in MODES}
        base, ratios = row["onnxruntime fp32"], [row[m] for m in modes]
        firsts = " / ".join(str(r["first_call_s"]) if r else "" for r in row.values())
        peaks = " / ".join(
            f"{r['peak_growth_mb']:.0f}" if r and "peak_growth_mb" in r else "" for r in row.values()
        )
        agree = min(r["agree"] for r in row.values() if r)
        lines.append(
            f"| `{model}` | {case} | {base['images_per_s'] if base else ''} | "
            + " | ".join(f"{r['vs_onnxruntime']}x" if r else "" for r in ratios)
            + f" | {firsts} | {peaks} | {agree:.4%} |"
        )
    big = result["tiled_large_image"]
    lines.append(
        f"\nvgg4_dilated, {big['size']}x{big['size']} in tiles of {big['tile']}: peak memory growth "
        f"{big['peak_growth_mb']:.0f} MB, labels {big['labels_dtype']}, equal to the whole image's on a "
        f"700x900 crop: {big['crop_equal']}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
