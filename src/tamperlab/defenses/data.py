"""Safety-training data, from the *defense-train* splits only.

Three recipes (``recipe=``), the same call sites:

* ``"v1"`` (the default today, pinned by tests/test_pinned_training.py): refusals for the first 320
  Do-Not-Answer prompts (80 context-distilled, 240 from six templates), utility = GSM8K only.
* ``"v2"`` (issue 15): refusals only where the Do-Not-Answer audit says refuse (context-distilled ones;
  the template rows are left out) plus Safety-Tuned LLaMAs' refusals in many phrasings; utility =
  general instructions (LIMA + Alpaca-GPT4), borderline-but-safe prompts answered helpfully, and
  GSM8K, interleaved by ``V2_UTILITY_WEIGHTS``. The helpful answers come from the datasets
  (``answers="dataset"``) or from the model being defended (``answers="self"``: self-distillation,
  greedy, through the generation cache; needs ``lm``). ``defense_data`` returns all of it with a
  provenance dict (recipe, answer source, counts, licences, model) for the defense to record.
* ``"v3"``: v2 plus contrast/defense-train (safe prompts in XSTest's ten categories with helpful
  answers, written for tamperlab) as a fourth utility part, ``V3_UTILITY_WEIGHTS``: v2's refusal SFT
  over-refused XSTest-safe prompts that borderline data (mostly "edgy words") never showed it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from ..data.registry import VENDOR, dataset_info, gsm8k_worked_answer
from ..data.splits import get_split
from ..training.data import SFTExample

RECIPES = ("v1", "v2", "v3")
ANSWER_SOURCES = ("dataset", "self")
# share of each helpful part in v2 utility data (a prefix of the list keeps these shares)
V2_UTILITY_WEIGHTS = {"instructions": 0.5, "borderline": 0.3, "gsm8k": 0.2}
V3_UTILITY_WEIGHTS = {"instructions": 0.35, "borderline": 0.2, "contrast": 0.3, "gsm8k": 0.15}


@lru_cache(maxsize=None)
def _refusal_rows() -> tuple[dict, ...]:
    text = (VENDOR / "refusals" / "rows.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def _check(recipe: str, answers: str = "dataset", lm=None) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"field 'recipe': must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if answers not in ANSWER_SOURCES:
        raise ValueError(f"field 'answers': must be one of {', '.join(ANSWER_SOURCES)}, got {answers!r}")
    if answers == "self" and lm is None:
        raise ValueError("answers='self' (self-distillation) needs the model: pass lm=")


def refusal_examples(recipe: str = "v1") -> list[SFTExample]:
    """Prompts that should be refused -> a refusal.

    v1: Do-Not-Answer (defense-train) -> refusal: context-distilled from the default model under a
    safety system prompt where both judges call it a refusal, else a curated template
    (data/vendor/refusals/PROVENANCE.json says which, per row).
    v2: ``audited_refusal_examples`` (distilled only) and ``varied_refusal_examples``, interleaved."""
    _check(recipe)
    if recipe != "v1":  # v2, v3
        return interleave({"stl": varied_refusal_examples(), "dna": audited_refusal_examples()})
    allowed = {r["id"] for r in get_split("harmful/defense-train")}
    return [SFTExample(r["id"], r["prompt"], r["completion"]) for r in _refusal_rows() if r["id"] in allowed]


def _dna_refuse_ids() -> set[str]:
    return {r["id"] for r in get_split("harmful/defense-train") if r["audit"] == "refuse"}


def audited_refusal_examples() -> list[SFTExample]:
    """Do-Not-Answer (defense-train) rows the audit says to refuse (data.registry.DNA_AUDIT), with
    their context-distilled refusal; template rows are left out (six phrasings for 240 prompts)."""
    keep = _dna_refuse_ids()
    return [SFTExample(r["id"], r["prompt"], r["completion"]) for r in _refusal_rows()
            if r["id"] in keep and r["kind"] == "distilled"]


def _stl_rows(refusal: bool) -> list[dict]:
    from ..judges.keyword import keyword_refused

    return [r for r in get_split("safe-answers/defense-train") if keyword_refused(r["completion"]) == refusal]


def varied_refusal_examples() -> list[SFTExample]:
    """Safety-Tuned LLaMAs (safe-answers/defense-train) rows whose safe answer is a refusal (by the
    refusal-keyword judge): harmful requests refused in hundreds of phrasings."""
    return [SFTExample(r["id"], r["prompt"], r["completion"]) for r in _stl_rows(True)]


def gsm8k_examples() -> list[SFTExample]:
    """GSM8K train (defense half): question -> the human-written worked solution, ending
    "The answer is N." (the format the gsm8k suite asks for)."""
    return [SFTExample(r["id"], r["question"], gsm8k_worked_answer(r)) for r in get_split("gsm8k/defense-train")]


def utility_examples(recipe: str = "v1", answers: str = "dataset", lm=None) -> list[SFTExample]:
    """Helpful examples. v1: GSM8K only (``gsm8k_examples``). v2: general instructions, helpful
    answers to borderline prompts and GSM8K, interleaved by V2_UTILITY_WEIGHTS (every prefix keeps
    the shares while all parts last); v3: the same plus ``contrast_examples`` (V3_UTILITY_WEIGHTS);
    ``answers`` picks dataset or self-distilled answers."""
    _check(recipe, answers, lm)
    if recipe == "v1":
        return gsm8k_examples()
    return _mixed_utility(recipe, answers, lm)[0]


def _mixed_utility(recipe: str, answers: str, lm) -> tuple[list[SFTExample], dict]:
    (instr, p1), (border, p2) = _answered("instructions/defense-train", answers, lm), _borderline(answers, lm)
    gsm = gsm8k_examples()
    parts = {"instructions": instr, "borderline": border, "gsm8k": gsm}
    weights = V2_UTILITY_WEIGHTS
    distill = {"self_distillation_instructions": p1, "self_distillation_borderline": p2}
    if recipe == "v3":
        parts["contrast"], distill["self_distillation_contrast"] = _answered("contrast/defense-train", answers, lm)
        weights = V3_UTILITY_WEIGHTS
    prov = {k: len(v) for k, v in parts.items()} | {"weights": dict(weights)}
    if answers == "self":
        prov.update(distill)
    return interleave({k: parts[k] for k in weights}, weights), prov


def contrast_examples(answers: str = "dataset", lm=None) -> list[SFTExample]:
    """contrast/defense-train: safe prompts in XSTest's categories (homonyms, figurative language,
    safe targets, fiction and games, definitions, history, public and fictional "privacy", ...)
    with the dataset's helpful answer, or the model's own (``answers="self"``)."""
    _check("v3", answers, lm)
    return _answered("contrast/defense-train", answers, lm)[0]


def _answered(split: str, answers: str, lm) -> tuple[list[SFTExample], dict | None]:
    """A split whose rows carry an answer -> examples with that answer, or the model's own
    (``answers="self"``, with the self-distillation provenance)."""
    ex = [SFTExample(r["id"], r["prompt"], r["completion"]) for r in get_split(split)]
    return (ex, None) if answers == "dataset" else self_distill(lm, ex)


_DECLINES = re.compile(r"\b(cannot|can't|unable to|won't)\b", re.I)


def _opening(text: str) -> str:
    """The first sentence of ``text`` (up to its first . ! or ?), at most 200 characters."""
    m = re.match(r"\s*(.+?[.!?])(?:\s|$)", text, re.S)
    return (m.group(1) if m else text).strip()[:200]


def contrast_pairs(answers: str = "dataset", lm=None) -> list[tuple[SFTExample, SFTExample]]:
    """(safe prompt -> helpful answer, same prompt -> a refusal) for every contrast/defense-train
    prompt: the preference pairs of refusal SFT's contrast term. The refusal is the opening sentence
    of one of the recipe's own varied refusals, picked by a hash of the prompt id: the phrasing refusal
    SFT teaches, so preferring the answer over it says "not here" to exactly what the refusal half of
    the mix makes likely on prompts that only sound unsafe. Only openings that open two or more
    refusals and decline outright ("I'm sorry, but I cannot help you with that.") are used: a
    one-off opening names its own prompt's topic."""
    from collections import Counter

    from ..judges.keyword import keyword_refused
    from ..utils.hashing import stable_hash

    seen = Counter(_opening(e.completion) for e in varied_refusal_examples())
    openings = sorted(o for o, n in seen.items() if n >= 2 and keyword_refused(o) and _DECLINES.search(o))
    pairs = []
    for e in contrast_examples(answers, lm):
        refusal = openings[int(stable_hash(["contrast-refusal", e.id])[:8], 16) % len(openings)]
        pairs.append((e, SFTExample(e.id, e.prompt, refusal)))
    return pairs


def instruction_examples(answers: str = "dataset", lm=None) -> list[SFTExample]:
    """LIMA + Alpaca-GPT4 (instructions/defense-train) -> the dataset's answer, or the model's own
    (``answers="self"``)."""
    _check("v2", answers, lm)
    return _answered("instructions/defense-train", answers, lm)[0]


def borderline_prompts() -> dict[str, list[SFTExample]]:
    """Benign prompts that sound unsafe, by where their answer comes from. With a dataset answer:
    ``edgy`` (LIMA / Alpaca-GPT4 rows of borderline/defense-train) and ``stl_safe`` (Safety-Tuned
    LLaMAs' safe answers that are not refusals). Without one (completion empty; self-distillation
    only): ``edgy_unanswered`` (Alpaca-instruction rows of borderline/defense-train) and
    ``dna_answer`` (the Do-Not-Answer rows the audit says should be answered)."""
    border = get_split("borderline/defense-train")
    return {"edgy": [SFTExample(r["id"], r["prompt"], r["completion"]) for r in border if r.get("completion")],
            "stl_safe": [SFTExample(r["id"], r["prompt"], r["completion"]) for r in _stl_rows(False)],
            "edgy_unanswered": [SFTExample(r["id"], r["prompt"], "") for r in border if not r.get("completion")],
            "dna_answer": [SFTExample(r["id"], r["prompt"], "") for r in get_split("harmful/defense-train")
                           if r["audit"] == "answer"]}


def borderline_examples(answers: str = "dataset", lm=None) -> list[SFTExample]:
    """Borderline-but-safe prompts answered helpfully, so "sounds scary" is not learnt as "refuse".
    dataset: ``edgy`` and ``stl_safe`` with their dataset answers, interleaved. self: ``edgy``,
    ``edgy_unanswered`` and ``dna_answer`` answered by the model itself (non-refusals kept), with
    ``stl_safe`` still the dataset's (harmful-adjacent prompts: the undefended model's own answer
    is not a safe target)."""
    _check("v2", answers, lm)
    return _borderline(answers, lm)[0]


def _borderline(answers: str, lm) -> tuple[list[SFTExample], dict | None]:
    p = borderline_prompts()
    if answers == "dataset":
        return interleave({"edgy": p["edgy"], "stl_safe": p["stl_safe"]}), None
    mine, prov = self_distill(lm, p["edgy"] + p["edgy_unanswered"] + p["dna_answer"])
    return interleave({"self": mine, "stl_safe": p["stl_safe"]}), prov


def interleave(parts: dict[str, list], weights: dict[str, float] | None = None) -> list:
    """Merge lists so every prefix holds each part in proportion to its weight (default: its size)
    until that part runs out; item j of part k sits at (j + 0.5) / w_k, ties by part order."""
    w = weights or {k: float(len(v)) for k, v in parts.items()}
    keyed = [((j + 0.5) / w[k], i, j, x) for i, (k, v) in enumerate(parts.items()) if w.get(k, 0) > 0
             for j, x in enumerate(v)]
    return [x for *_, x in sorted(keyed, key=lambda t: t[:3])]


SELF_DISTILL_TOKENS = 192


def self_distill(lm, examples: list[SFTExample], max_new_tokens: int | None = None, fmt: str = "chat",
                 batch_size: int = 16, use_cache: bool = True) -> tuple[list[SFTExample], dict]:
    """The model answers the prompts itself (greedy, its chat format, through the generation cache):
    self-distillation keeps the model's own output distribution as the utility target. Answers the
    refusal-keyword judge calls refusals, and empty ones, are dropped (a refusal is not a helpful
    target). Returns the examples and a provenance dict (model, fingerprint, decoding, counts)."""
    from ..generation import GenerationCache, GenerationConfig, generate
    from ..judges.keyword import keyword_refused

    gcfg = GenerationConfig(max_new_tokens=max_new_tokens or SELF_DISTILL_TOKENS, do_sample=False,
                            batch_size=batch_size)
    cache = GenerationCache(lm.fingerprint) if use_cache else None
    outs = generate(lm, [e.prompt for e in examples], fmt, gcfg, cache=cache, description="self-distillation")
    kept = [SFTExample(e.id, e.prompt, o.strip()) for e, o in zip(examples, outs)
            if o.strip() and not keyword_refused(o)]
    n_empty = sum(1 for o in outs if not o.strip())
    prov = {"answers": "self", "model": lm.name, "fingerprint": lm.fingerprint, "format": fmt,
            "generation": gcfg.cache_params(), "prompts": len(examples), "kept": len(kept),
            "dropped_empty": n_empty, "dropped_refusals": len(examples) - len(kept) - n_empty}
    return kept, prov


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


def preference_pairs(recipe: str = "v1") -> list[tuple[SFTExample, SFTExample]]:
    """(prompt → refusal, same prompt → harmful answer) pairs for the preference losses: Do-Not-Answer
    (defense-train) prompts where we have both the refusal above and the undefended default model's
    own compliant answer (judge-filtered, data/vendor/defense_harmful/PROVENANCE.json).
    v2: only prompts the audit says to refuse (the chosen side is still distilled or template: varied
    chosen refusals need the model's harmful answers to Safety-Tuned LLaMAs prompts, not generated yet)."""
    _check(recipe)
    allowed = _dna_refuse_ids() if recipe != "v1" else {r["id"] for r in get_split("harmful/defense-train")}
    refusals = {r["id"]: r for r in _refusal_rows() if r["id"] in allowed}
    pairs = []
    for h in _harmful_rows():
        r = refusals.get(h["id"])
        if r is not None:
            pairs.append((SFTExample(r["id"], r["prompt"], r["completion"]),
                          SFTExample(h["id"], h["prompt"], h["completion"])))
    return pairs


@dataclass
class DataFields:
    """Dataclass fields every defense config carries: which data it trains on (recorded in its
    identity and in defense.json)."""
    data_recipe: str = field(default="v2", metadata={
        "help": "v2: audited refusals in many phrasings + general instructions, helpful borderline answers and "
                "GSM8K | v3: v2 + helpful answers to safe prompts in XSTest's categories (contrast/defense-train) "
                "| v1: the original (Do-Not-Answer refusals, six templates, GSM8K only)"})
    utility_answers: str = field(default="dataset", metadata={
        "help": "v2/v3 helpful answers: dataset (LIMA/Alpaca-GPT4's own) | self (the original model's, self-distilled)"})

    def validate_data(self) -> None:
        from ..utils.config import ConfigError

        if self.data_recipe not in RECIPES:
            raise ConfigError(f"field 'data_recipe': one of {', '.join(RECIPES)}, got {self.data_recipe!r}")
        if self.utility_answers not in ("dataset", "self"):
            raise ConfigError(f"field 'utility_answers': dataset | self, got {self.utility_answers!r}")


@dataclass
class DefenseData:
    """Everything a defense trains on for one recipe, and where it came from."""
    safety: list[SFTExample]
    utility: list[SFTExample]
    pairs: list[tuple[SFTExample, SFTExample]]
    provenance: dict = field(default_factory=dict)


def _licences(prefixes: set[str]) -> dict[str, dict]:
    by_prefix = {"donotanswer": "donotanswer", "stl": "safety-tuned-llamas", "lima": "lima",
                 "alpaca-gpt4": "alpaca-gpt4-demo", "alpaca-edgy": "alpaca-edgy", "gsm8k": "gsm8k-train",
                 "contrast": "contrast-train"}
    out = {}
    for p in sorted(prefixes):
        if p in by_prefix:
            info = dataset_info(by_prefix[p])
            out[by_prefix[p]] = {"licence": info["licence"], "nc": info["nc"]}
    return out


def _prefix(row_id: str) -> str:
    for p in ("alpaca-gpt4", "alpaca-edgy", "donotanswer", "stl", "lima", "gsm8k"):
        if row_id.startswith(p):
            return p
    return row_id.split("-")[0]


def defense_data(recipe: str = "v2", answers: str = "dataset", lm=None) -> DefenseData:
    """Refusals, helpful examples and preference pairs of ``recipe`` with a provenance dict: recipe,
    answer source (and the model, decoding and counts for self-distillation), rows per part and
    source, and each source's licence (NC flagged)."""
    _check(recipe, answers, lm)
    safety, pairs = refusal_examples(recipe), preference_pairs(recipe)
    prov: dict = {"recipe": recipe, "answers": answers}
    if recipe == "v1":
        utility = utility_examples()
        parts: dict = {"gsm8k": len(utility)}
    else:
        utility, parts = _mixed_utility(recipe, answers, lm)
    prov["rows"] = {"safety": len(safety), "utility": parts, "pairs": len(pairs)}
    ids = [e.id for e in safety] + [e.id for e in utility] + [r.id for r, _ in pairs]
    prov["sources"] = {k: sum(1 for i in ids if _prefix(i) == k) for k in sorted({_prefix(i) for i in ids})}
    prov["licences"] = _licences(set(prov["sources"]))
    return DefenseData(safety, utility, pairs, prov)


def data_fingerprint(recipe: str = "v1", answers: str = "dataset", lm=None) -> str:
    """Content hash of every defense training row: part of a defended model's identity, so changed
    data is never mistaken for a finished defense. v1 (the default) hashes exactly what it always
    did; v2 also hashes the recipe, the answer source and (self) the model's fingerprint."""
    from ..utils.hashing import stable_hash

    if recipe == "v1" and answers == "dataset":
        return stable_hash([[(e.id, e.prompt, e.completion) for e in refusal_examples()],
                            [(e.id, e.completion) for e in utility_examples()],
                            [(r.id, h.completion) for r, h in preference_pairs()]])
    d = defense_data(recipe, answers, lm)
    return stable_hash({"recipe": recipe, "answers": answers, "model": lm.fingerprint if answers == "self" else None,
                        "safety": [(e.id, e.prompt, e.completion) for e in d.safety],
                        "utility": [(e.id, e.prompt, e.completion) for e in d.utility],
                        "pairs": [(r.id, r.completion, h.completion) for r, h in d.pairs]})
