"""The README as a newcomer meets it: short, every Python block runs as written, every link resolves."""

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
