"""Rerun the mutations listed in tests/README.md: `python tools/mutate.py`.

Each mutation breaks one line of the code on purpose, runs the test meant to catch it, and puts
the line back; a mutation the test does not catch is reported and makes the exit status 1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (file, original text, broken text, the test that must fail)
MUTATIONS = [
    ("zoo/data/stats.py", "    structure[1] = True\n", "    structure[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]\n",
     "tests/test_layouts.py::test_layout_stats_on_hand_built_maps"),
    ("zoo/data/stats.py", "LEFT_COLUMNS = 14", "LEFT_COLUMNS = 13", "tests/test_layouts.py::test_layout_stats_on_hand_built_maps"),
    ("zoo/data/generate.py", "SLOT_JITTER = 10", "SLOT_JITTER = 9", "tests/test_layouts.py::test_m2nist_layout_edges"),
    ("zoo/data/generate.py", "& (lefts + GLYPH <= w)", "& (lefts >= 0)", "tests/test_layouts.py::test_m2nist_layout_glyph_counts"),
    ("zoo/cpu.py", "max(conv.dilation) >= 2 and conv.in_channels % 16", "max(conv.dilation) >= 2",
     "tests/test_bf16.py::test_fault_workaround_touches_only_the_faulty_shapes"),
    ("zoo/cpu.py", "        if isinstance(conv, nn.Conv2d) and max(conv.dilation) >= 2 and conv.in_channels % 16:",
     "        if False:", "tests/test_bf16.py::test_every_convolution_gets_right_bf16_weight_gradients"),
]  # fmt: skip


def main() -> int:
    missed = 0
    for path, old, new, test in MUTATIONS:
        file = ROOT / path
        source = file.read_text()
        if source.count(old) != 1:
            print(f"{path}: the text to break is not there once (the code changed): {old.strip()!r}")
            missed += 1
            continue
        file.write_text(source.replace(old, new))
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", test], cwd=ROOT, capture_output=True, text=True)
        finally:
            file.write_text(source)
        caught = run.returncode != 0
        missed += not caught
        print(f"{'caught' if caught else 'NOT CAUGHT'}: {path}: {old.strip()!r} -> {new.strip()!r} ({test})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
