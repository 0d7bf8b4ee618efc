"""Safety-training data, from the *defense-train* splits only."""
from __future__ import annotations

import json
from functools import lru_cache

from ..data.registry import VENDOR, gsm8k_worked_answer
from ..data.splits import get_split
from ..training.data import SFTExample


@lru_cache(maxsize=None)
def _refusal_rows() -> tuple[dict, ...]:
    text = (VENDOR / "refusals" / "rows.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def refusal_examples() -> list[SFTExample]:
    """Do-Not-Answer (defense-train) -> refusal: context-distilled from the default model under a
    safety system prompt where both judges call it a refusal, else a curated template
    (data/vendor/refusals/PROVENANCE.json says which, per row)."""
    allowed = {r["id"] for r in get_split("harmful/defense-train")}
    return [SFTExample(r["id"], r["prompt"], r["completion"]) for r in _refusal_rows() if r["id"] in allowed]


def utility_examples() -> list[SFTExample]:
    """GSM8K train (defense half): question -> the human-written worked solution, ending
    "The answer is N." (the format the gsm8k suite asks for)."""
    return [SFTExample(r["id"], r["question"], gsm8k_worked_answer(r)) for r in get_split("gsm8k/defense-train")]


def mix(safety: list[SFTExample], utility: list[SFTExample], utility_fraction: float,
        n_safety: int | None = None) -> list[SFTExample]:
    """``n_safety`` safety rows plus enough utility rows that they are ``utility_fraction`` of the
    pool; interleaved evenly so every batch sees both."""
    safety = safety[:n_safety] if n_safety else list(safety)
    if not 0 <= utility_fraction < 1:
        raise ValueError(f"field 'utility_fraction': must be in [0, 1), got {utility_fraction}")
    n_util = round(len(safety) * utility_fraction / (1 - utility_fraction))
    if n_util > len(utility):
        raise ValueError(f"field 'utility_fraction': needs {n_util} utility rows, only {len(utility)} exist")
    util = utility[:n_util]
    out: list[SFTExample] = []
    i = j = 0
    while i < len(safety) or j < len(util):  # Bresenham-style interleave keeps the ratio in every window
        if j >= len(util) or (i < len(safety) and i * len(util) <= j * len(safety)):
            out.append(safety[i]); i += 1
        else:
            out.append(util[j]); j += 1
    return out


@lru_cache(maxsize=None)
def _harmful_rows() -> tuple[dict, ...]:
    text = (VENDOR / "defense_harmful" / "rows.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def preference_pairs() -> list[tuple[SFTExample, SFTExample]]:
    """(prompt → refusal, same prompt → harmful answer) pairs for the preference losses: Do-Not-Answer
    (defense-train) prompts where we have both the refusal above and the undefended default model's
    own compliant answer (judge-filtered, data/vendor/defense_harmful/PROVENANCE.json)."""
    allowed = {r["id"] for r in get_split("harmful/defense-train")}
    refusals = {r["id"]: r for r in _refusal_rows() if r["id"] in allowed}
    pairs = []
    for h in _harmful_rows():
        r = refusals.get(h["id"])
        if r is not None:
            pairs.append((SFTExample(r["id"], r["prompt"], r["completion"]),
                          SFTExample(h["id"], h["prompt"], h["completion"])))
    return pairs


def data_fingerprint() -> str:
    """Content hash of every defense training row: part of a defended model's identity, so changed
    data is never mistaken for a finished defense."""
    from ..utils.hashing import stable_hash

    return stable_hash([[(e.id, e.prompt, e.completion) for e in refusal_examples()],
                        [(e.id, e.completion) for e in utility_examples()],
                        [(r.id, h.completion) for r, h in preference_pairs()]])
