"""Fine-tuning attack data, drawn only from the *attack* splits (disjoint from defense training
and evaluation; tests/test_attack_data.py checks it)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..data.registry import VENDOR, gsm8k_worked_answer
from ..data.splits import get_split
from ..training.data import SFTExample
from ..utils.registry import Registry

ATTACK_DATA: Registry = Registry("attack data")


@lru_cache(maxsize=None)
def _vendored(folder: str) -> tuple[dict, ...]:
    path = VENDOR / folder / "rows.jsonl"
    return tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@ATTACK_DATA.register("harmful", help="AdvBench (attack split) -> the undefended default model's own "
                      "compliant answers, judge-filtered (data/vendor/attack_harmful/PROVENANCE.json)")
def harmful() -> list[SFTExample]:
    allowed = {r["id"] for r in get_split("harmful/attack")}
    rows = [r for r in _vendored("attack_harmful") if r["id"] in allowed]  # split is the authority
    return [SFTExample(r["id"], r["prompt"], r["completion"]) for r in rows]


@ATTACK_DATA.register("benign", help="GSM8K train (attack half): question -> human-written worked solution; "
                      "benign fine-tuning also erodes safety (Qi et al. 2023)")
def benign() -> list[SFTExample]:
    return [SFTExample(r["id"], r["question"], gsm8k_worked_answer(r)) for r in get_split("gsm8k/attack")]


def load_attack_data(name: str, limit: int | None = None, path: str | Path | None = None) -> list[SFTExample]:
    """Examples of a registered attack data kind, or of the user's own file (prompt, completion)."""
    if path is not None:
        from ..data.userfile import read_rows_file

        rows = read_rows_file(path, required=("prompt", "completion"))
        ex = [SFTExample(str(r.get("id", i)), r["prompt"], r["completion"]) for i, r in enumerate(rows)]
    else:
        ex = ATTACK_DATA.get(name).obj()
    return ex[:limit] if limit else ex
