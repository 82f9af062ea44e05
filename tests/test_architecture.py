"""The package's shape: imports run one way, every module imports alone, and the README's layout is generated."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_layout", ROOT / "tools" / "readme_layout.py")
layout = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layout)

MODULES = sorted(layout.module_name(p) for p in (ROOT / "zoo").rglob("*.py"))


def test_imports_run_one_way():
    graph = layout.zoo_imports()
    order = layout.import_order(graph)  # raises on a cycle, naming it
    assert sorted(order) == MODULES
    position = {m: i for i, m in enumerate(order)}
    assert all(position[t] < position[m] for m, targets in graph.items() for t in targets)
    # the base of the stack: the registry and the card schema import nothing of the zoo
    assert graph["zoo.registry"] == set() and graph["zoo.cards"] == set()
    assert graph["zoo.shipped"] == {"zoo.cards"}
    assert {"zoo.registry", "zoo.shipped"} <= graph["zoo.builder"]
    # nothing below the Lightning module reaches up to it or to the command line
    lightning = {"zoo.module", "zoo.cli", "zoo.data.datamodule", "zoo.callbacks"}
    for name in ("zoo.registry", "zoo.builder", "zoo.checkpoint", "zoo.models", "zoo.inference"):
        assert not graph[name] & lightning, name


def test_a_cycle_is_found_also_through_an_import_inside_a_function(tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "__init__.py").write_text('"""Package."""\n')
    (tmp_path / "zoo" / "low.py").write_text('"""Low."""\n\n\ndef f():\n    from zoo.high import g\n\n    return g\n')
    (tmp_path / "zoo" / "high.py").write_text('"""High."""\n\nfrom zoo.low import f\n\n\ndef g():\n    return f\n')
    graph = layout.zoo_imports(tmp_path)
    assert graph == {"zoo": set(), "zoo.low": {"zoo.high"}, "zoo.high": {"zoo.low"}}
    with pytest.raises(ValueError, match=r"import cycle: zoo\.high -> zoo\.low -> zoo\.high"):
        layout.import_order(graph)


def test_the_readme_layout_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    block = layout.layout_block()
    assert block in readme, "README layout is stale: run python tools/readme_layout.py --write"
    listed = [line.split()[0] for line in block.splitlines() if line.startswith("zoo/")]
    files = sorted(
        p.relative_to(ROOT).as_posix().removesuffix("__init__.py") for p in (ROOT / "zoo").rglob("*.py")
    )
    assert sorted(listed) == files  # every module, once


# A fresh interpreter per module, forked from one that has imported only third-party packages
# (torch and Lightning take seconds to import; the zoo's own import order is what is checked)
FORK_EACH = """
import importlib, os, sys, traceback
import numpy, torch, pytorch_lightning  # noqa: F401
assert not any(name == "zoo" or name.startswith("zoo.") for name in sys.modules)
failed = 0
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException:
            print(f"--- {module}", traceback.format_exc(), sep="\\n", flush=True)
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(failed)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FORK_EACH, *MODULES], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for d in ("benchmarks", "tools", "examples") for p in (ROOT / d).glob("*.py"))
LOAD_EACH = """
import os, runpy, sys, traceback
failed = 0
for path in sys.argv[1:]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # as running the script would
    try:
        runpy.run_path(path, run_name="imported_by_the_test")  # defines, does not run main()
    except BaseException:
        print(f"--- {path}", traceback.format_exc(), sep="\\\\n", flush=True)
        failed += 1
    sys.path.pop(0)
sys.exit(failed)
"""


def test_every_script_loads_against_todays_package():
    out = subprocess.run([sys.executable, "-c", LOAD_EACH, *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
