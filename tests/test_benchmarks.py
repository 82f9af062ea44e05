"""The benchmark harness runs and writes what it promises (no timing is asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_harness():
    if str(ROOT / "benchmarks") not in sys.path:  # as running the script would: its helpers beside it
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_args(model: str) -> list[str]:
    """One model at 64x84 on the CPU, one repetition, no warm-up: the harness's smallest run."""
    return [
        "--models",
        model,
        "--sizes",
        "64x84",
        "--devices",
        "cpu",
        "--warmup",
        "0",
        "--reps",
        "1",
        "--quick",
    ]


@pytest.mark.slow  # about 5.5 s with its bf16 rows; the fp32 harness runs every time (next test)
def test_harness_smoke(tmp_path, capsys):
    bench = load_harness()
    out = tmp_path / "bench.json"
    args = quick_args("vgg4_dilated")
    assert bench.main([*args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    bf16 = bench.has_bf16()
    assert [r.get("bf16", False) for r in rows] == ([False, True] if bf16 else [False])
    peaks = data["machine"]["matmul_peak_flops"]
    assert peaks["cpu"] > 0 and (peaks["cpu-bf16"] > 0 if bf16 else "cpu-bf16" not in peaks)
    for row in rows:
        # MACs by hand: per pixel 9*(1*16 + 16*24 + 24*32 + 32*48) + 48*11, over 64x84 pixels
        assert row["macs_per_image"] == (9 * (16 + 384 + 768 + 1536) + 528) * 64 * 84
        assert row["inference"]["images_per_s"] > 0 and row["training"]["images_per_s"] > 0
    assert ("speedup_vs_fp32" in rows[-1]) == bf16 and "speedup_vs_fp32" not in rows[0]
    printed = capsys.readouterr().out
    assert "| `vgg4_dilated` | 64x84 x32 | cpu |" in printed
    assert ("| `vgg4_dilated` | 64x84 x32 | cpu bf16 |" in printed) == bf16
    assert ("| `vgg4_dilated` | 64x84 x32 | " in printed.split("bf16 / fp32 inference")[-1]) == bf16


def test_interleaved_timing_takes_turns():
    bench = load_harness()
    calls = []
    times = bench.interleaved(
        [lambda: calls.append("a"), lambda: calls.append("b")], "cpu", warmup=1, reps=3, min_seconds=0.0
    )
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-ups first, then one repetition of each in turn
    assert [len(t) for t in times] == [3, 3]


def test_harness_skips_bf16_rows_without_bf16_instructions(tmp_path, capsys, monkeypatch):
    bench = load_harness()
    monkeypatch.setattr(bench, "has_bf16", lambda: False)
    out = tmp_path / "bench.json"
    args = quick_args("vgg4_strided")
    assert bench.main([*args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r.get("bf16", False) for r in data["rows"]] == [False]
    assert "cpu-bf16" not in data["machine"]["matmul_peak_flops"]
    assert "no bf16 instructions" in capsys.readouterr().out


@pytest.mark.slow  # about 10 s under the profiler
def test_step_profile_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "benchmarks" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "profile.json"
    assert module.main(["--batch", "2", "--reps", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    # vgg4_dilated's batch-norm widths, and two multiples of 32 for reference
    assert set(data["bn_backward"]) == {"16", "24", "32", "48", "64", "96"}
    row = data["bn_backward"]["24"]  # 2 x 24 x 64 x 84 elements
    per_element = row["channels_last_ms"] * 1e6 / (2 * 24 * 64 * 84)
    assert row["channels_last_ns_per_element"] == pytest.approx(per_element)
    assert data["operator_ms_per_step"]["convolution"] > 0 and data["step_ms"] > 0
