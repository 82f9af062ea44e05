"""Full resolution against downsampling on real images: `python benchmarks/folder.py`.

The ISBI 2012 EM membrane sections (`../shared/data/isbi2012-membranes`, 30 labelled 512x512
grayscale images, masks 0/255) through the folder data module, exactly as a user trains them:
`python train.py fit --data FolderSegmentation ...` (run in-process through `zoo.training.cli.main`),
the data's own fixed split (sections 00-21 train, 22-25 validation, 26-29 test) given as a split
file. Every model gets the same recipe, steps and batch. Written as a table and to JSON:

- quality on the four test sections at full size: membrane IoU and F1, mean IoU, pixel accuracy
  (the confusion matrix of `train.py test`);
- fit time, and per model a training step at 512x512 (batch 4, the precision training uses)
  and inference at 512x512 and 2048x2048 (whole and in tiles of 512): images/s and peak memory
  growth, each measured in its own child process (`VmHWM` from /proc/self/status); the training
  step's time against `unet`'s with the two models taking turns in one process, each first in
  half the turns (median of 6 steps each, median over `--reps` processes);
- the data loader's own images/s (decoding, cropping and augmenting), with 0 and 2 workers.

`--models`, `--epochs` and `--crops` shrink it; `--skip-train` re-measures speed only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "isbi2012-membranes"
MODELS = (
    "vgg7_dilated",
    "vgg7_dilated_context",
    "vgg7_dilated_skip_context",
    "vgg7_dilated_skip16_context",
    "resnet18_dilated",
    "unet",
    "unet_small",
    "vgg4_strided",
)
SPLIT = {
    "train": [f"{i:02d}" for i in range(22)],
    "val": [f"{i:02d}" for i in range(22, 26)],
    "test": [f"{i:02d}" for i in range(26, 30)],
}
PEER = "unet"


def train_command(
    name: str,
    run_dir: Path,
    split_file: Path,
    epochs: int,
    crops: int,
    batch: int,
    crop: int,
    seed: int = 0,
    augment: bool = True,
) -> list[str]:
    """The train.py arguments of one model's run (the same recipe for every model)."""
    return [
        "fit",
        "--seed_everything", str(seed),
        "--data", "FolderSegmentation",
        "--data.root", str(DATA),
        "--data.mask_values", "[0, 255]",
        "--data.classes", "[membrane, cell]",
        "--data.split_file", str(split_file),
        "--data.crop_size", str(crop),
        "--data.batch_size", str(batch),
        "--data.crops_per_epoch", str(crops),
        "--data.num_workers", "2",
        "--data.augment", str(augment).lower(),
        "--model.arch", name,
        "--trainer.max_epochs", str(epochs),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def train(name: str, out: Path, split_file: Path, args, seed: int = 0) -> dict:
    """Fit and test one model through train.py in a child process; its results.json."""
    run_dir = out / (name if seed == 0 else f"{name}_seed{seed}")
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *train_command(
            name, run_dir, split_file, args.epochs, args.crops, args.batch, args.crop, seed, args.augment
        ),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: train.py failed:\n{done.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    return results


CHILD = r"""
import json, statistics, sys, time
import torch, torch.nn.functional as F
import zoo
from zoo.cpu import has_bf16, keep_freed_memory

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def training_step(name, size):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=2)
    batch = 4
    x, y = torch.rand(batch, 1, size, size), torch.randint(0, 2, (batch, size, size))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return step, batch

def seconds(run):
    t = time.perf_counter(); run(); return time.perf_counter() - t

keep_freed_memory()
name, what, size, tile, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
tile = None if tile == "none" else int(tile)
bf16 = has_bf16()
if what == "train_vs":  # this model's step against the peer's (argv[6]), in turns, in one process
    runs = [training_step(name, size)[0], training_step(sys.argv[6], size)[0]]
    for run in runs:
        run()  # warm-up
    times = [[], []]
    for r in range(reps):  # which goes first alternates: the second of a pair ran measurably faster
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            times[i].append(seconds(runs[i]))
    ms, peer_ms = (1000 * statistics.median(t) for t in times)
    print(json.dumps({"step_ms": ms, "peer_step_ms": peer_ms, "ratio": ms / peer_ms, "bf16": bf16}))
    sys.exit()
if what == "train":
    run, images = training_step(name, size)
else:
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=2).eval()
    x = torch.randint(0, 256, (size, size), dtype=torch.uint8).numpy()
    run, images = (lambda: zoo.predict(model, x, tile=tile)), 1
base = hwm_mb()
run()  # warm-up
times = [seconds(run) for _ in range(reps)]
speed = images / statistics.median(times)
print(json.dumps({"images_per_s": speed, "peak_growth_mb": hwm_mb() - base, "bf16": bf16}))
"""


def measure(name: str, what: str, size: int, tile: int | None, reps: int, peer: str = PEER) -> dict:
    """One speed and memory figure, in a child process of its own (its VmHWM is its own).

    `what="train_vs"`: `name`'s training step time over `peer`'s, the two taking turns in one process.
    """
    args = [name, what, str(size), "none" if tile is None else str(tile), str(reps), peer]
    done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} {what} {size}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def loader_speed(
    split_file: Path, workers: int, crop: int, batch: int, batches: int = 20, augment: bool = True
) -> float:
    """Training crops per second that the folder data module's loader delivers (no model)."""
    from zoo.training.datamodules import FolderSegmentation

    data = FolderSegmentation(
        str(DATA), mask_values=[0, 255], split_file=str(split_file), crop_size=crop, batch_size=batch,
        num_workers=workers, crops_per_epoch=batch * (batches + 2), augment=augment,
    )  # fmt: skip
    loader = data.train_dataloader()
    it = iter(loader)
    next(it), next(it)  # workers started
    start = time.perf_counter()
    n = sum(len(images) for images, _ in it)
    return n / (time.perf_counter() - start)


def main() -> None:
    from machine import describe  # benchmarks/machine.py, beside this script

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--crops", type=int, default=352, help="training crops an epoch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train each model once per seed")
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the folder module's flips and 90-degree rotations (its default; --no-augment: without)",
    )
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="no speed and memory figures")
    parser.add_argument("--out", default=None, help="run folders (default: a temporary one)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "folder.json"))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no data at {DATA}")
    sys.path.insert(0, str(ROOT))
    from zoo import count_parameters, create_model

    out = Path(args.out or tempfile.mkdtemp(prefix="folder_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "isbi_split.json"
    split_file.write_text(json.dumps(SPLIT))
    rows = []
    for name in args.models:
        row = {"model": name, "parameters": count_parameters(create_model(name, num_classes=2))}
        if not args.skip_train:
            runs = [train(name, out, split_file, args, seed) for seed in args.seeds]
            ious = [r["test"]["iou"][0] for r in runs]
            iou = statistics.mean(ious)
            row.update(
                membrane_iou=round(iou, 4),
                membrane_f1=round(statistics.mean(2 * i / (1 + i) for i in ious), 4),
                miou=round(statistics.mean(r["test"]["miou"] for r in runs), 4),
                pixel_acc=round(statistics.mean(r["test"]["pixel_acc"] for r in runs), 4),
                fit_seconds=round(statistics.median(r["fit_seconds"] for r in runs), 1),
                precision=runs[0]["precision"],
            )
            if len(args.seeds) > 1:  # the mean above, each seed's score here
                row["membrane_iou_per_seed"] = {str(s): round(i, 4) for s, i in zip(args.seeds, ious)}
            print(
                f"{name}: membrane IoU {row['membrane_iou']} (seeds {ious}), fit {row['fit_seconds']} s",
                flush=True,
            )
        rows.append(row)
    # speed and memory: the modes take turns model by model, repetition by repetition
    cases = (
        []
        if args.skip_speed
        else [("train", 512, None), ("infer", 512, None), ("infer", 2048, None), ("infer", 2048, 512)]
    )
    for case in cases:
        key = f"{case[0]}_{case[1]}" + ("_tiled" if case[2] else "")
        samples = {name: [] for name in args.models}
        for _ in range(args.reps):
            for name in args.models:
                samples[name].append(measure(name, *case, reps=2 if case[1] > 512 else 3))
        for row in rows:
            s = samples[row["model"]]
            row[f"{key}_images_per_s"] = round(statistics.median(m["images_per_s"] for m in s), 3)
            row[f"{key}_peak_mb"] = round(statistics.median(m["peak_growth_mb"] for m in s), 1)
        print(f"measured {key}", flush=True)
    if cases:  # the ratio to the peer's step: both models in one process, in turns, per repetition
        for row in rows:
            ratios = [measure(row["model"], "train_vs", 512, None, reps=6)["ratio"] for _ in range(args.reps)]
            row["train_step_time_vs_unet"] = round(statistics.median(ratios), 2)
        print("measured train_512 against unet", flush=True)
    loader = (
        {}
        if args.skip_speed
        else {
            f"workers_{w}": round(loader_speed(split_file, w, args.crop, args.batch, augment=args.augment), 1)
            for w in (0, 2)
        }
    )
    result = {
        "command": "python benchmarks/folder.py " + " ".join(sys.argv[1:]),
        "machine": describe(),
        "recipe": {"epochs": args.epochs, "crops_per_epoch": args.crops, "batch": args.batch,
                   "crop": args.crop, "seeds": args.seeds, "augment": args.augment,
                   "steps": args.epochs * -(-args.crops // args.batch),
                   "train.py": "python train.py " + " ".join(train_command(
                       "MODEL", Path("RUN"), Path("SPLIT"), args.epochs, args.crops, args.batch, args.crop,
                       augment=args.augment))},
        "loader_crops_per_s": loader,
        "rows": rows,
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"written: {args.json}")


def format_table(result: dict) -> str:
    """The table of docs/benchmarks.md from the JSON (the quality and speed columns the run measured)."""
    quality = any("membrane_iou" in r for r in result["rows"])
    speed = all("train_512_images_per_s" in r for r in result["rows"])
    head = "| model | params |"
    if quality:
        head += " membrane IoU | membrane F1 | mean IoU | pixel acc | fit s |"
    if speed:
        head += (
            " train 512 img/s (x unet time) | train peak MB | infer 512 img/s "
            "| infer 2048 img/s whole / tiled | infer 2048 peak MB whole / tiled |"
        )
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in result["rows"]:
        line = f"| `{r['model']}` | {r['parameters']:,} |"
        if quality:
            seeds = r.get("membrane_iou_per_seed")
            iou = f"{r.get('membrane_iou', '')}" + (
                f" ({', '.join(map(str, seeds.values()))})" if seeds else ""
            )
            line += (
                f" {iou} | {r.get('membrane_f1', '')} | {r.get('miou', '')} | {r.get('pixel_acc', '')} | "
                f"{r.get('fit_seconds', '')} |"
            )
        if speed:
            line += (
                f" {r['train_512_images_per_s']:.2f} ({r.get('train_step_time_vs_unet', '')}x) | "
                f"{r['train_512_peak_mb']:.0f} | {r['infer_512_images_per_s']:.2f} | "
                f"{r['infer_2048_images_per_s']:.3f} / {r['infer_2048_tiled_images_per_s']:.3f} | "
                f"{r['infer_2048_peak_mb']:.0f} / {r['infer_2048_tiled_peak_mb']:.0f} |"
            )
        lines.append(line)
    loader = result.get("loader_crops_per_s")
    if loader:
        lines.append(
            f"\nData loader: {loader['workers_0']} crops/s with 0 workers, {loader['workers_2']} with 2."
        )
    if len(result["recipe"].get("seeds", [0])) > 1:
        lines.append(f"\nMeans over seeds {result['recipe']['seeds']}; each seed's membrane IoU in brackets.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
