"""Where runs execute. The protocol hands an executor a list of independent, picklable run payloads
and a function; each run writes its own rows to the study database. A Ray or Slurm executor is one
more registered function with this signature."""
from __future__ import annotations

import os
from typing import Callable

from ..utils.registry import Registry

EXECUTORS: Registry = Registry("executor")
Job = Callable[[dict], dict]


@EXECUTORS.register("local", help="in this process, one run after another (models loaded once)")
def local(payloads: list[dict], job: Job, workers: int, on_done: Callable[[dict], None]) -> None:
    for p in payloads:
        on_done(job(p))


def _init_worker(threads: int) -> None:
    import torch

    os.environ["TAMPERLAB_PROGRESS"] = "0"  # the parent draws the study's progress bar
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)


@EXECUTORS.register("process", help="N worker processes on this machine (spawned; each loads its models once)")
def process(payloads: list[dict], job: Job, workers: int, on_done: Callable[[dict], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(job, p) for p in payloads}
        while futures:
            done, futures = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                on_done(f.result())  # re-raises a worker's error here; finished runs are already stored
