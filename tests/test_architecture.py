"""The package's shape: imports run one way, the core stays apart from Lightning and the data, every
module imports alone, moved paths still work, and the documented layout is generated."""

import ast
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


CORE = ("zoo", "zoo.models", "zoo.layers", "zoo.registry", "zoo.builder", "zoo.shipped", "zoo.cards",
        "zoo.checkpoint", "zoo.inference", "zoo.preprocess", "zoo.cpu", "zoo.hf", "zoo.rf")  # fmt: skip


def reached(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every zoo module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_neither_the_lightning_side_nor_the_data(core):
    graph = layout.zoo_imports()
    modules = reached(graph, core) | {core}
    assert not {m for m in modules if m.startswith(("zoo.training", "zoo.data"))}, core


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the packages a file imports (anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_training_package_imports_lightning():
    lightning = {"pytorch_lightning", "lightning", "torchmetrics", "jsonargparse"}
    users = {
        layout.module_name(p) for p in (ROOT / "zoo").rglob("*.py") if third_party_imports(p) & lightning
    }
    assert users and all(m.startswith("zoo.training") for m in users), sorted(users)


def test_importing_the_core_loads_no_lightning_and_no_data():
    code = (
        "import sys, zoo, zoo.models, zoo.layers, zoo.inference, zoo.checkpoint, zoo.rf\n"
        "zoo.create_model('vgg4_dilated')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning', "
        "'torchmetrics')"
        " or m.startswith(('zoo.training', 'zoo.data'))]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_readme_generators_and_experiments_live_in_tools_not_in_the_package():
    for name in ("summary", "concentration", "identity_errors", "glyph_classifier"):
        assert not list((ROOT / "zoo").rglob(f"{name}.py")), name
        assert (ROOT / "tools" / f"{name}.py").is_file(), name


MOVED = {  # old path -> new path, kept for one release
    "zoo.module": "zoo.training.module",
    "zoo.cli": "zoo.training.cli",
    "zoo.callbacks": "zoo.training.callbacks",
    "zoo.metrics": "zoo.training.metrics",
    "zoo.losses": "zoo.training.losses",
    "zoo.data.datamodule": "zoo.training.datamodules",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_still_imports_from_its_old_path_with_a_warning(old):
    import importlib

    new = importlib.import_module(MOVED[old])
    public = [
        n
        for n, v in vars(new).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == new.__name__
    ]
    assert public
    module = importlib.import_module(old)
    for name in public:
        with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {MOVED[old]}.{name}"):
            assert getattr(module, name) is getattr(new, name)
    with pytest.raises(AttributeError), pytest.warns(DeprecationWarning):
        _ = module.no_such_name


def test_a_cycle_is_found_also_through_an_import_inside_a_function(tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "__init__.py").write_text('"""Package."""\n')
    (tmp_path / "zoo" / "low.py").write_text(
        '"""Low."""\n\n\ndef f():\n    from zoo.high import g\n\n    return g\n'
    )
    (tmp_path / "zoo" / "high.py").write_text(
        '"""High."""\n\nfrom zoo.low import f\n\n\ndef g():\n    return f\n'
    )
    graph = layout.zoo_imports(tmp_path)
    assert graph == {"zoo": set(), "zoo.low": {"zoo.high"}, "zoo.high": {"zoo.low"}}
    with pytest.raises(ValueError, match=r"import cycle: zoo\.high -> zoo\.low -> zoo\.high"):
        layout.import_order(graph)


def test_the_documented_layout_is_the_generated_one():
    design = (ROOT / "docs" / "design.md").read_text()
    block = layout.layout_block()
    assert block in design, "docs/design.md's layout is stale: run python tools/readme_layout.py --write"
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


SCRIPTS = sorted(
    p.relative_to(ROOT).as_posix()
    for d in ("benchmarks", "tools", "examples")
    for p in (ROOT / d).glob("*.py")
)
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
    out = subprocess.run(
        [sys.executable, "-c", LOAD_EACH, *SCRIPTS], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
