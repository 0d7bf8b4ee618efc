"""Rich progress bars for anything that takes more than a few seconds.

Set ``TAMPERLAB_PROGRESS=0`` to silence them (tests, logs)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def enabled() -> bool:
    return os.environ.get("TAMPERLAB_PROGRESS", "1") not in ("0", "false", "no")


_ACTIVE: list[Progress] = []  # rich allows one live display: nested bars join the outer one


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """``with progress("generating", n) as advance: ... advance(k)``.

    Nested calls (evaluation inside a training run inside a study) add a line to the display that
    is already live instead of opening a second one."""
    if not enabled() or total <= 0:
        yield lambda k=1: None
        return
    if _ACTIVE:
        p = _ACTIVE[-1]
        task = p.add_task(description, total=total)
        try:
            yield lambda k=1: p.advance(task, k)
        finally:
            p.remove_task(task)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as p:
        task = p.add_task(description, total=total)
        _ACTIVE.append(p)
        try:
            yield lambda k=1: p.advance(task, k)
        finally:
            _ACTIVE.pop()
