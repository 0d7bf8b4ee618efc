"""Batched vs one-prompt-at-a-time generation throughput on the default model, in one run.

    .venv/bin/python benchmarks/generation_throughput.py [--model M] [--n 32] [--tokens 64]

Both paths use tamperlab's own ``generate`` (greedy, no cache) on the same HarmBench eval prompts;
throughput = generated tokens / wall second. Last line: ``ratio: X`` (batched / sequential)."""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TAMPERLAB_PROGRESS", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32, help="prompts in the batched run")
    ap.add_argument("--sequential", type=int, default=8, help="prompts in the one-at-a-time run")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()

    import torch

    from tamperlab.data import get_split
    from tamperlab.generation import GenerationConfig, generate
    from tamperlab.models import load_model

    lm = load_model(a.model)
    prompts = [r["prompt"] for r in get_split("harmful/eval")[: a.n]]
    tok = lm.tokenizer

    def n_tokens(outs: list[str]) -> int:
        return sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)

    generate(lm, prompts[:2], "chat", GenerationConfig(max_new_tokens=4))  # warm-up
    cfg = GenerationConfig(max_new_tokens=a.tokens, batch_size=a.batch_size)
    t0 = time.perf_counter()
    outs = generate(lm, prompts, "chat", cfg)
    tb = time.perf_counter() - t0
    batched = n_tokens(outs) / tb

    one = GenerationConfig(max_new_tokens=a.tokens, batch_size=1)
    t0 = time.perf_counter()
    seq_outs = [generate(lm, [p], "chat", one)[0] for p in prompts[: a.sequential]]
    ts = time.perf_counter() - t0
    sequential = n_tokens(seq_outs) / ts
    print(f"model: {a.model}  threads: {torch.get_num_threads()}  max_new_tokens: {a.tokens}")
    print(f"batched:    {len(prompts)} prompts, batch {a.batch_size}: {batched:.1f} tokens/s ({tb:.1f} s)")
    print(f"sequential: {len(seq_outs)} prompts one at a time: {sequential:.1f} tokens/s ({ts:.1f} s)")
    print(f"ratio: {batched / sequential:.2f}")


if __name__ == "__main__":
    main()
