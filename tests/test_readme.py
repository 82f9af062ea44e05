"""README and docs as a newcomer meets them: short, Python blocks run, links resolve, tables generated."""

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_stays_short():
    assert len(README.splitlines()) <= 200


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_python_block_runs_as_written(block, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are the checkout's
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    # a print whose comment ends in ": <value>" states what it prints
    stated = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#.*: (.+)$", block, re.M)]
    assert printed.getvalue().split("\n")[: len(stated)] == stated


def test_there_is_a_python_block():
    assert BLOCKS


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]
)
def test_every_relative_link_resolves(page):
    text = (ROOT / page).read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert ((ROOT / page).parent / target).exists(), f"{page}: {target}"


def test_the_benchmark_tables_in_the_docs_are_the_ones_their_json_draws():
    from helpers import load_tool

    tables = load_tool("benchmark_tables")
    documented = {}
    for page in tables.pages():
        documented.update(tables.documented_blocks(page.read_text()))
    assert sorted(documented) == sorted(tables.TABLES)  # every JSON's table is on a page, once
    for path, text in documented.items():
        assert text == tables.block(path), f"{path}: run python tools/benchmark_tables.py --write"
