"""CPU settings and fast paths: the allocator setting (never a side effect) and the fast paths' one switch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORWARD = """
import torch, zoo, zoo.cpu
m = zoo.create_model("vgg4_dilated")
with torch.no_grad():
    m.eval()(torch.rand(1, 1, 8, 8))
m.train()(torch.rand(2, 1, 8, 8)).sum().backward()
print(zoo.cpu._decided, zoo.cpu._applied)
"""

EXPLICIT = """
import zoo.cpu
print(zoo.cpu.keep_freed_memory(), zoo.cpu._applied)
"""

TRAIN_ENTRY = """
import zoo.training.cli, zoo.cpu
code = zoo.training.cli.main(["fit", "--model.arch", "no_such_model"])
print(code, zoo.cpu._applied)
"""


def _run(script: str, env_value: str | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ZOO_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["ZOO_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_model_calls_change_no_process_setting():
    assert _run(FORWARD) == "False False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_an_explicit_call_applies_it():
    assert _run(EXPLICIT) == "True True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_the_training_entry_point_applies_it():
    assert _run(TRAIN_ENTRY) == "2 True"


def test_opt_out():
    assert _run(EXPLICIT, "0") == "False False"


# The fast paths behind zoo.cpu's one switch: off, every layer runs its plain PyTorch form, and
# the two agree on every registered model.

import torch  # noqa: E402
from helpers import random_batchnorm  # noqa: E402

import zoo  # noqa: E402
import zoo.cpu  # noqa: E402


@pytest.mark.parametrize("name", zoo.list_models())
def test_switching_the_fast_paths_off_gives_the_same_labels_plainly(name, monkeypatch):
    torch.manual_seed(0)
    model = random_batchnorm(zoo.create_model(name))
    x = torch.rand(2, 1, 30, 37)
    with torch.no_grad():
        fast = model(x)

        def refuse(*args):
            raise AssertionError("a fast path ran with the switch off")

        monkeypatch.setattr(zoo.cpu, "fused_conv_bn_act", refuse)
        with zoo.cpu.fast_paths(False):
            plain = model(x)
    assert zoo.cpu.fast_paths_enabled()  # the block restores the switch
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())


def test_the_environment_switch_turns_them_off():
    code = "import zoo.cpu; print(zoo.cpu.fast_paths_enabled())"
    for value, expected in (("0", "False"), ("1", "True")):
        env = {**os.environ, "ZOO_CPU_FAST_PATHS": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
        assert out.stdout.strip() == expected, out.stderr[-1000:]


class NoFusedOp:
    """torch.ops.mkldnn as a PyTorch without `_convolution_pointwise` shows it."""

    def __getattr__(self, name):
        raise AttributeError(f"no op {name}")


def test_a_pytorch_without_the_fused_operator_falls_back_with_one_warning(monkeypatch):
    model = random_batchnorm(zoo.create_model("vgg4_dilated"))
    x = torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        expected = model(x)
        monkeypatch.setattr(zoo.cpu, "_fused_conv_op", None)
        monkeypatch.setattr(torch.ops, "mkldnn", NoFusedOp())
        with pytest.warns(RuntimeWarning, match="no torch.ops.mkldnn._convolution_pointwise") as seen:
            got = model(x)
            model(x)  # warned once, not per layer or per call
    assert len([w for w in seen if issubclass(w.category, RuntimeWarning)]) == 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_the_switch_also_covers_running_max_pooling_and_the_bf16_way_around(monkeypatch):
    import torch.nn.functional as F

    pooled = []
    real = F.max_pool2d
    monkeypatch.setattr(F, "max_pool2d", lambda *a, **k: pooled.append(1) or real(*a, **k))
    x = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        fast = zoo.cpu.max_pool_stride1(x, 3)
        assert not pooled  # running maxima, no max_pool2d
        with zoo.cpu.fast_paths(False):
            plain = zoo.cpu.max_pool_stride1(x, 3)
        assert pooled  # the plain operator
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)

    monkeypatch.setattr(zoo.cpu, "_bf16_conv_fault", True)  # as a PyTorch with the fault reports
    conv = zoo.layers.Conv2d(24, 16, 3, padding=2, dilation=2)
    x = torch.rand(1, 24, 8, 8, dtype=torch.bfloat16)
    assert zoo.cpu.bf16_conv_fault_applies(conv, x)
    with zoo.cpu.fast_paths(False):
        assert not zoo.cpu.bf16_conv_fault_applies(conv, x)
