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


def table_rows(text: str, header_start: str) -> dict[str, list[str]]:
    """A markdown table's rows by their first cell (the model name, without backticks)."""
    lines = text[text.index(header_start) :].splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_readme_model_table_agrees_with_the_models_and_the_full_table():
    import zoo

    short = table_rows(README, "| model | parameters | receptive field |")
    full = table_rows((ROOT / "docs" / "models.md").read_text(), "| model | params (M2NIST) |")
    shipped = {name for name, cells in full.items() if cells[5] != "not trained here"}
    assert set(short) == shipped == set(zoo.list_models(pretrained=True))
    for name, (params, field, down, score) in short.items():
        model = zoo.create_model(name)
        assert int(params.replace(",", "")) == zoo.count_parameters(model), name
        assert int(field) == zoo.receptive_field(model).size, name
        assert down.startswith("no" if model.full_resolution else "yes"), name
        assert score == full[name][5], name  # the shipped weights' score, as tools/summary.py measured it
