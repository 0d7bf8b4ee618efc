"""Cost of one AntiDote step (one adversary move + one defender move) relative to one refusal-SFT
step on the same batch and model, in one run; peak memory of each, too.

    .venv/bin/python benchmarks/antidote_step_cost.py [--model smollm2-135m-instruct] [--steps 6]

Each arm runs in its own fresh process (so peak memory is its own): build the LoRA defender the
same way, take ``--warmup`` untimed steps, then time ``--steps`` steps. SFT step = NLL of the
refusals of the harmful batch + NLL of the benign batch, backward, optimizer step. AntiDote step =
adversary_step + defender_step (activation read, patched DPO both ways, benign LM + KL).
AntiDote computes the frozen reference's log-probs of every preference pair once at set-up (printed
separately). Peak memory includes the loaded model: since the one-engine refactor the defender's
LoRA sits on that model (reference = adapter disabled) instead of on a deep copy of it. Last line: ``ratio: X`` = AntiDote seconds per step / SFT seconds per step (target <= 3)."""
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


def arm(name: str, model: str, steps: int, warmup: int, batch: int, sets: dict | None = None) -> dict:
    import torch

    from tamperlab.defenses.antidote import AntiDoteConfig, AntiDoteTrainer
    from tamperlab.models import load_model
    from tamperlab.training.engine import Engine

    lm = load_model(model)
    from tamperlab.utils.config import from_dict

    cfg = from_dict(AntiDoteConfig, {"steps": steps + warmup, "block": 1, "batch_size": batch, "benign_batch_size": batch,
                                     "warmup_steps": 0, "checkpoint_every": 0, "check_every": 0, **(sets or {})})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        t = AntiDoteTrainer(lm, cfg, Engine(tmp, checkpoint_every=0))  # includes the one-time reference pass
        setup = time.perf_counter() - t0
        if name == "sft":
            from tamperlab.training.losses import nll

            def sft_loss(i: int):
                _, ref_b, _, _ = t.pair_batch(2 * i + 1)
                return nll(t.model, ref_b) + nll(t.model, t.benign_batch(i)), {}

            def step(i: int) -> None:  # the defender's optimizer, on the same engine
                t.engine.optimize(t.defender, [i], sft_loss)
        else:
            def step(i: int) -> None:
                t.adversary_step(2 * i)
                t.defender_step(2 * i + 1, i)
        for i in range(warmup):
            step(i)
        t0 = time.perf_counter()
        for i in range(warmup, warmup + steps):
            step(i)
        sec = (time.perf_counter() - t0) / steps
        counts = t.param_counts()
        t.close()
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"arm": name, "seconds_per_step": sec, "setup_seconds": setup, "peak_bytes": peak,
            "peak_kind": "cuda max allocated" if torch.cuda.is_available() else "process max RSS",
            "params": counts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="an AntiDote setting (repeatable), e.g. --set adv_rank=4 to time an older configuration")
    ap.add_argument("--arm", choices=["sft", "antidote"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    from tamperlab.utils.config import parse_sets

    sets = parse_sets(tuple(a.sets))
    if a.arm:
        print(json.dumps(arm(a.arm, a.model, a.steps, a.warmup, a.batch, sets)))
        return
    res = {}
    for name in ("sft", "antidote"):
        out = subprocess.run([sys.executable, __file__, "--arm", name, "--model", a.model, "--steps", str(a.steps),
                              "--warmup", str(a.warmup), "--batch", str(a.batch)] + [f"--set={x}" for x in a.sets],
                             check=True, capture_output=True, text=True).stdout
        res[name] = json.loads(out.strip().splitlines()[-1])
    s, d = res["sft"], res["antidote"]
    p = d["params"]
    print(f"model {a.model}: {p['model']:,} parameters; adversary {p['adversary']:,} "
          f"({p['adversary_to_model']:.2%}); defender LoRA {p['defender_lora']:,}")
    print(f"batch: {a.batch} harmful pairs + {a.batch} benign examples; {a.steps} timed steps after {a.warmup} warm-up")
    print(f"sft step: {s['seconds_per_step']:.2f} s; antidote step (adversary + defender): {d['seconds_per_step']:.2f} s")
    print(f"one-time set-up incl. reference log-probs of all pairs (not per step): {d['setup_seconds']:.1f} s")
    print(f"peak memory ({s['peak_kind']}): sft {s['peak_bytes'] / 2**20:.0f} MiB, antidote {d['peak_bytes'] / 2**20:.0f} MiB, "
          f"ratio {d['peak_bytes'] / s['peak_bytes']:.2f}")
    print(f"ratio: {d['seconds_per_step'] / s['seconds_per_step']:.2f}")


if __name__ == "__main__":
    main()
