"""The README's layout section names every module of the package, so it cannot drift."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_layout_section_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    named = set(re.findall(r"zoo/[\w/]+\.py|zoo/\w+/", layout)) | {
        f"zoo/{m}.py" for m in re.findall(r"zoo/\w+\.py: |zoo\.(\w+)", layout) if m
    }
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "zoo").rglob("*.py") if "__" not in p.name]
    missing = [m for m in modules if m not in named and not any(m.startswith(d) for d in named if d.endswith("/"))]
    assert not missing, f"README layout lacks {missing}"
    assert "hubconf.py" in layout and "train.py" in layout
