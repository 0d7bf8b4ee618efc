"""Rich progress bars for anything that takes more than a few seconds.

Set ``TAMPERLAB_PROGRESS=0`` to silence them (tests, logs)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def enabled() -> bool:
    return os.environ.get("TAMPERLAB_PROGRESS", "1") not in ("0", "false", "no")


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """``with progress("generating", n) as advance: ... advance(k)``."""
    if not enabled() or total <= 0:
        yield lambda k=1: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as p:
        task = p.add_task(description, total=total)
        yield lambda k=1: p.advance(task, k)
