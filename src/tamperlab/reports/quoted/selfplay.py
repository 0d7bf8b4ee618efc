"""The self-play study's quoted tables and values: trained-parameter counts from each defense.json,
and the cross-play matrix from docs/selfplay/crossplay/matrix.json (the durability part of the
study is quoted through ``matched``, like the other matched-utility studies)."""

from __future__ import annotations

import json
from statistics import mean

from .blocks import block
from .fmt import f2, table
from .fmt import mmm_of as _cell
from .sources import QuoteError, Results
from .values import facts_from

STUDY = "selfplay"
METHOD_LABELS = {"abs": "ABS (attacker + defender adapters)", "self-play": "self-play (one shared adapter)"}


def _defenses(r: Results) -> dict[str, list[dict]]:
    root = r.root / "docs" / STUDY / "models"
    out: dict[str, list[dict]] = {}
    for f in sorted(root.glob("*/defense.json")) if root.is_dir() else []:
        d = json.loads(f.read_text(encoding="utf-8"))
        out.setdefault(d["method"], []).append(d)
    return out


@block("selfplay-params")
def _params(r: Results) -> str:
    got = _defenses(r)
    if not got:
        raise QuoteError(f"docs/{STUDY}/models: no defense.json")
    rows = []
    for method, ds in got.items():
        p = _params_of(method, ds)
        if any(d["params"] != p for d in ds):
            raise QuoteError(f"docs/{STUDY}: {method}'s parameter counts differ between seeds")
        adapters = ", ".join(f"{k.removesuffix('_lora')} {v:,}" for k, v in p.items() if k.endswith("_lora"))
        secs = [d["seconds"] for d in ds]
        rows.append([METHOD_LABELS.get(method, method), adapters, f"{p['trained']:,}", f"{p['trained'] / p['model']:.2%}",
                     f"{p['model']:,}", str(len(ds)), f"{mean(secs) / 60:.1f} [{min(secs) / 60:.1f}, {max(secs) / 60:.1f}]"])
    header = ["method", "LoRA adapters (parameters)", "trained parameters", "share of the model", "model parameters",
              "training seeds", "training minutes, mean [min, max]"]
    return table(header, rows, [f"docs/{STUDY}/models/*/defense.json"])


def _params_of(method: str, ds: list[dict]) -> dict:
    p = ds[0].get("params", {})
    if not {"trained", "model"} <= set(p):
        raise QuoteError(f"docs/{STUDY}/models: {method}'s defense.json has no trained/model parameter counts")
    return p


def _matrix(r: Results) -> dict:
    m = r.json(f"{STUDY}/crossplay/matrix.json")
    if "replicates" not in m:
        raise QuoteError(f"docs/{STUDY}/crossplay/matrix.json: from before replicate groups; re-run the cross-play")
    return m


@block("selfplay-crossplay")
def _crossplay(r: Results) -> str:
    m = _matrix(r)
    cells = {(c["attacker"], c["defender"]): c for c in m["cells"]}
    rows = []
    for metric, what in (("harmful_rate", "harmful rate on harmful seeds ↓"),
                         ("benign_answer_rate", "answer rate on benign seeds ↑")):
        for a in m["attackers"]:
            rows.append([what, a] + [_cell(cells[(a, d)][metric]) for d in m["defenders"]])
    c0 = m["cells"][0]["n"]
    rep = m["replicates"]
    note = (f"Held-out seeds `harmful/eval` n={c0['harmful']} and `borderline/eval` n={c0['benign']}; mean [min, max] over "
            f"{rep['training_seeds']} training seeds × {rep['sampling_seeds']} rewrite sampling seed(s) (training seed i's "
            f"attacker meets training seed i's defender); harm judge `{m['judges'][0]}` on the seed request and the "
            f"answer, refusal judge `{m['judges'][1]}`; `none` = the seed request unrewritten. ")
    return table(["metric", "attacker \\ defender"] + m["defenders"], rows, [f"docs/{STUDY}/crossplay/matrix.json"],
                 note=note)


@facts_from
def _selfplay_facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    for method, ds in _defenses(r).items():
        p = _params_of(method, ds)
        out[f"selfplay.{method}.trained"] = f"{p['trained']:,}"
        out[f"selfplay.{method}.share"] = f"{p['trained'] / p['model']:.2%}"
        out[f"selfplay.{method}.seeds"] = str(len(ds))
    if not (r.root / "docs" / STUDY / "crossplay" / "matrix.json").exists():
        return out
    for c in _matrix(r)["cells"]:
        for metric, short in (("harmful_rate", "harm"), ("benign_answer_rate", "answer")):
            out[f"selfplay.x.{c['attacker']}.{c['defender']}.{short}"] = _cell(c[metric])
            out[f"selfplay.x.{c['attacker']}.{c['defender']}.{short}.mean"] = f2(c[metric]["mean"])
    return out
