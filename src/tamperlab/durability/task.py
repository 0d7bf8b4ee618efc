"""Run one task from files, in a fresh process: what a batch-system executor (Slurm, a remote
shell) launches for each payload.

    python -m tamperlab.durability.task MODULE:FUNCTION PAYLOAD.json RESULT.json

reads the payload, calls the task function and writes its result as JSON (atomically: a result
file exists only for a finished task). Nothing else is shared with the driver."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def run_task_file(job: str, payload_path: str | Path, result_path: str | Path) -> dict:
    from ..utils.io import atomic_write_text

    module, _, name = job.partition(":")
    fn = getattr(importlib.import_module(module), name)
    result = fn(json.loads(Path(payload_path).read_text(encoding="utf-8")))
    atomic_write_text(result_path, json.dumps(result))
    return result


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m tamperlab.durability.task MODULE:FUNCTION PAYLOAD.json RESULT.json")
    run_task_file(*sys.argv[1:])
