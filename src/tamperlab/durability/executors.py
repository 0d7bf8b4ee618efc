"""Where tasks execute. A task is a top-level function of one plain-data payload (picklable and
JSON-serialisable) that returns plain data: a study run returns its result rows, a defense its model
directory. Tasks never touch the study database; the driver (``run_study``) stores what they return,
so a worker on another machine needs no shared database (artefacts such as defended model
directories are paths the payloads name).

An executor is one registered function::

    executor(payloads, job, workers, on_done) -> None

It calls ``job(p)`` for every payload, hands each result back with ``on_done(p, result)`` (in the
driver's process, in any order), and on the first failure cancels the work still queued, hands back
what was already running, and raises :class:`TaskFailed` for the payload that failed (its cause
chained). A Ray or Slurm executor is one more function with this signature."""
from __future__ import annotations

import os
import sys
from typing import Callable

from ..utils.registry import Registry

EXECUTORS: Registry = Registry("executor")
Job = Callable[[dict], dict]
OnDone = Callable[[dict, dict], None]


class TaskFailed(RuntimeError):
    """A task raised; ``payload`` is the one that failed, ``__cause__`` the worker's error."""

    def __init__(self, payload: dict, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.payload = payload
        self.__cause__ = cause


@EXECUTORS.register("local", help="in this process, one task after another")
def local(payloads: list[dict], job: Job, workers: int, on_done: OnDone) -> None:
    for p in payloads:
        try:
            result = job(p)
        except Exception as e:
            raise TaskFailed(p, e) from e
        on_done(p, result)


def _init_worker(threads: int) -> None:
    import torch

    os.environ["TAMPERLAB_PROGRESS"] = "0"  # the parent draws the study's progress bar
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)


@EXECUTORS.register("process", help="N worker processes on this machine (spawned); the first failure "
                    "cancels queued tasks")
def process(payloads: list[dict], job: Job, workers: int, on_done: OnDone) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(job, p): p for p in payloads}
        pending, failed = set(futures), None
        while pending and failed is None:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is None:
                    on_done(futures[f], f.result())
                elif failed is None:
                    failed = f
        if failed is None:
            return
        cancelled = sum(f.cancel() for f in pending)
        running = [f for f in pending if not f.cancelled()]
        if running:
            print(f"a task failed; {cancelled} queued task(s) cancelled, waiting for {len(running)} running "
                  "one(s) to finish (their results are kept)", file=sys.stderr)
        for f in wait(running).done:
            if f.exception() is None:
                on_done(futures[f], f.result())
        raise TaskFailed(futures[failed], failed.exception()) from failed.exception()
