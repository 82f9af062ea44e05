"""Progress bars for long jobs: shown on a terminal, silent otherwise (logs, CI, pipes)."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm


def progress_bar(
    iterable: Iterable | None = None, total: int | None = None, desc: str = "", show: bool | None = None
):
    """A tqdm bar on stderr; `show=None` shows it only when stderr is a terminal."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=None if show is None else not show,
        leave=False,
        mininterval=0.5,
    )
