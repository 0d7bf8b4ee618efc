"""Cost of one training step of every registered defense relative to refusal SFT, on the same
model and the same batch, in one run; peak memory of each, too.

    .venv/bin/python benchmarks/defense_step_cost.py [--model smollm2-135m-instruct] [--steps 3]

Every arm runs in its own fresh process (its peak memory is its own) and builds its method's
session exactly as ``tamperlab defend`` does (LoRA on the shared base, the v2 defense data), with
one batch shape for all: ``--batch`` SFT-mix examples and ``--batch`` harmful pairs for the methods
that read them (AntiDote: ``--batch`` preference pairs + ``--batch`` benign examples, one adversary
move + one defender move). Each arm takes ``--warmup`` untimed steps, then times ``--steps``.
Printed: seconds per step, the ratio to SFT, peak memory (CUDA max allocated, or process max RSS
on CPU) and its ratio. Methods come from the registry: a new defense is timed without editing this."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TAMPERLAB_PROGRESS", "0")


def arm(method: str, model: str, steps: int, warmup: int, batch: int, sets: dict) -> dict:
    import torch

    from tamperlab.defenses import DEFENSES
    from tamperlab.models import load_model
    from tamperlab.training.engine import Engine
    from tamperlab.utils.config import from_dict

    lm = load_model(model)
    entry = DEFENSES.get(method)
    fields = entry.config_cls.__dataclass_fields__
    kw = {"steps": steps + warmup, "batch_size": batch, "warmup_steps": 0, "checkpoint_every": 0, "check_every": 0,
          "max_length": 160}
    for k in ("harm_batch_size", "benign_batch_size"):
        if k in fields:
            kw[k] = batch
    if "block" in fields:
        kw["block"] = 1
    cfg = from_dict(entry.config_cls, {**kw, **sets.get(method, {})})
    cfg.validate()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(tmp, checkpoint_every=0)
        t0 = time.perf_counter()
        if method == "antidote":  # its own trainer: two players
            from tamperlab.defenses.antidote import AntiDoteTrainer

            session = AntiDoteTrainer(lm, cfg, engine)

            def step(i: int) -> None:
                session.adversary_step(2 * i)
                session.defender_step(2 * i + 1, i)
        else:
            from tamperlab.defenses.session import DefenseSession

            session = DefenseSession(lm, cfg, engine, entry.obj.objective())

            def step(i: int) -> None:
                session.objective.step(session, i)
        setup = time.perf_counter() - t0
        for i in range(warmup):
            step(i)
        t0 = time.perf_counter()
        for i in range(warmup, warmup + steps):
            step(i)
        sec = (time.perf_counter() - t0) / steps
        session.close()
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"method": method, "seconds_per_step": sec, "setup_seconds": setup, "peak_bytes": peak,
            "peak_kind": "cuda max allocated" if torch.cuda.is_available() else "process max RSS"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--methods", default="", help="comma-separated (default: every registered defense)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="a setting of one method (repeatable), e.g. --set tar.inner_steps=2")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    a = ap.parse_args()
    from tamperlab.utils.config import parse_sets

    sets = parse_sets(tuple(a.sets))  # {"tar": {"inner_steps": 2}}
    if a.arm:
        print(json.dumps(arm(a.arm, a.model, a.steps, a.warmup, a.batch, sets)))
        return
    from tamperlab.defenses import DEFENSES

    methods = [m for m in (a.methods.split(",") if a.methods else DEFENSES.names()) if m]
    methods = ["sft"] + [m for m in methods if m != "sft"]
    res = {}
    for m in methods:
        proc = subprocess.run([sys.executable, __file__, "--arm", m, "--model", a.model, "--steps", str(a.steps),
                               "--warmup", str(a.warmup), "--batch", str(a.batch)] + [f"--set={x}" for x in a.sets],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{m}: failed\n{proc.stderr[-2000:]}")
        res[m] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  measured {m}: {res[m]['seconds_per_step']:.2f} s/step", file=sys.stderr, flush=True)
    s = res["sft"]
    print(f"model {a.model}; batch {a.batch} (SFT mix, plus {a.batch} harmful pairs where a method reads them); "
          f"{a.steps} timed steps after {a.warmup} warm-up; max_length 160; settings: defaults"
          + (f" + {a.sets}" if a.sets else ""))
    print(f"{'method':<10} {'s/step':>7} {'x SFT':>6} {'peak MiB':>9} {'x SFT':>6}   ({s['peak_kind']})")
    for m in methods:
        r = res[m]
        print(f"{m:<10} {r['seconds_per_step']:>7.2f} {r['seconds_per_step'] / s['seconds_per_step']:>6.2f} "
              f"{r['peak_bytes'] / 2**20:>9.0f} {r['peak_bytes'] / s['peak_bytes']:>6.2f}")


if __name__ == "__main__":
    main()
