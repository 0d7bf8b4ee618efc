"""Overhead of the durability protocol (planning, SQLite rows, worker glue, aggregation, report with
figures) relative to calling the same trainer and evaluator directly, in one run; then the cost of
re-running the finished study.

    .venv/bin/python benchmarks/durability_overhead.py [--model smollm2-135m-instruct] [--seeds 2]

Both arms: one LoRA attack cell on the same model, same seeds, steps and evaluation (harm suite),
generation cache off in both so neither reuses the other's work; models are loaded before timing.
Arms run in ABBA order (direct, protocol, protocol, direct); last line: ``overhead: X`` = protocol seconds / direct seconds - 1 (target <= 0.10)."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TAMPERLAB_PROGRESS", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-llama-4l")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", default="0,5,10")
    ap.add_argument("--limit", type=int, default=16, help="harm prompts per evaluation")
    ap.add_argument("--tokens", type=int, default=32, help="generated tokens per prompt")
    a = ap.parse_args()

    from tamperlab.attacks.data import load_attack_data
    from tamperlab.attacks.finetune import AttackConfig
    from tamperlab.durability import DurabilityConfig, run_study
    from tamperlab.evaluation import EvalConfig, evaluate
    from tamperlab.models import load_model
    from tamperlab.training import train_sft

    steps = [int(s) for s in a.steps.split(",")]
    attack = {"method": "lora", "lr": 1e-4, "batch_size": 4, "data": "harmful", "max_length": 192}
    ev = {"suite": ["harm"], "limit": a.limit, "max_new_tokens": a.tokens, "use_cache": False}
    lm = load_model(a.model)
    pool = load_attack_data("harmful")
    evaluate(lm, EvalConfig(**{**ev, "limit": 2}))  # warm-up: judge and embedding model loaded

    def direct_arm() -> float:
        t0 = time.perf_counter()
        for seed in range(a.seeds):
            cfg = AttackConfig(**attack, steps=max(steps), checkpoint_steps=steps, seed=seed)
            train_sft(lm, pool, cfg.train_config(), checkpoint_steps=steps,
                      on_checkpoint=lambda step, view: evaluate(view, EvalConfig(**ev, seed=seed)))
        return time.perf_counter() - t0

    study = DurabilityConfig(name="overhead", models=[{"name": "m", "model": a.model}], attack=attack,
                             seeds=a.seeds, steps=steps, eval=ev)

    def protocol_arm(out: Path) -> float:
        t0 = time.perf_counter()
        run_study(study, out)
        return time.perf_counter() - t0

    # ABBA order: a drift in machine speed over the run (warm-up, thermal, allocator) hits both arms
    # equally, instead of flattering whichever arm runs second.
    with tempfile.TemporaryDirectory() as tmp:
        d1 = direct_arm()
        p1 = protocol_arm(Path(tmp, "a"))
        p2 = protocol_arm(Path(tmp, "b"))
        d2 = direct_arm()
        t0 = time.perf_counter()
        summary = run_study(study, Path(tmp, "b"))
        rerun = time.perf_counter() - t0
    direct, protocol = d1 + d2, p1 + p2
    assert summary["runs_executed"] == 0
    print(f"model {a.model}, {a.seeds} seeds, steps {steps}, harm n={a.limit}, {a.tokens} tokens")
    print(f"direct (train_sft + evaluate): {d1:.1f} + {d2:.1f} s (runs 1 and 4)")
    print(f"protocol (run_study, DB, report): {p1:.1f} + {p2:.1f} s (runs 2 and 3)")
    print(f"re-run of the finished study: {rerun:.2f} s = {rerun / p2:.3f} of the first run (target <= 0.05)")
    print(f"overhead: {protocol / direct - 1:.3f}")


if __name__ == "__main__":
    main()
