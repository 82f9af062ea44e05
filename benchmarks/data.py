"""Data-loading throughput: `python benchmarks/data.py` (images/s of the training loader).

Compare with the training throughput of benchmarks/run.py: the loader must stay well above it so
the training loop never waits on data. Writes benchmarks/data.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import write_json  # noqa: E402  (benchmarks/run.py, beside this script)

from zoo.training.datamodules import M2NISTDataModule  # noqa: E402


def loader_rate(augment: bool, workers: int, batches: int) -> float:
    data = M2NISTDataModule(data_dir=None, batch_size=32, num_workers=workers, augment=augment,
                            train_size=32 * batches, val_size=32, test_size=32)  # fmt: skip
    data.setup()
    loader = data.train_dataloader()
    loader.sampler.set_epoch(0)
    start, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--json", default="benchmarks/data.json")
    args = parser.parse_args(argv)
    rows = []
    for augment in (False, True):
        for workers in (0, 2):
            rate = loader_rate(augment, workers, args.batches)
            rows.append({"augment": augment, "num_workers": workers, "images_per_s": rate})
            print(f"augment={augment!s:5}  num_workers={workers}: {rate:8.0f} images/s", flush=True)
    write_json(args.json, {"threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
