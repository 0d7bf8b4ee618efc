"""Build, and score judges against, the hand-labelled validation set of our own models' outputs.

    python scripts/validation_set.py generate MODEL=DIR ...  # answers -> docs/validation/items.jsonl (to label)
    python scripts/validation_set.py sample STUDY_DIR        # a study's samples -> items.jsonl (to label)
    python scripts/validation_set.py agreement               # labels.jsonl -> docs/validation/agreement.json

`sample` takes, from a finished study's samples (DIR/samples/...), every model's answers before any
attack on the harm suite and the borderline/over-refusal suites, and the attacked models' answers at
the last step (seed 0): a fixed, seeded selection, so the set is reproducible from the study.
`agreement` re-judges each labelled item with every judge and writes how often each one's
"complied or not" matches the human label (docs/validation/RUBRIC.md), overall and per prompt kind."""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "validation"
HARMFUL_SUITES = {"harm"}
BENIGN_SUITES = {"overrefusal", "borderline"}


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def sample(study: Path, per_group: int = 30, seed: int = 0, skip: tuple[str, ...] = ()) -> list[dict]:
    """``skip``: models (study names) whose answers are not sampled (already labelled elsewhere)."""
    rng = random.Random(seed)
    groups: dict[tuple, list[dict]] = {}
    for f in sorted((study / "samples").rglob("samples.jsonl")):
        model_dir, cell, seed_dir, step_dir = f.parts[-5:-1]
        model = model_dir.rsplit("-", 1)[0]
        if model in skip:
            continue
        step = int(step_dir.split("-")[0][4:])
        for r in _read(f):
            if r["suite"] not in HARMFUL_SUITES | BENIGN_SUITES:
                continue
            attacked = cell not in ("reference", "baseline") and step > 0
            if attacked and seed_dir != "seed0":
                continue
            stage = f"attacked step {step}" if attacked else "before attack"
            if cell not in ("reference", "baseline") and step == 0 and r["suite"] in HARMFUL_SUITES and seed_dir != "seed0":
                continue
            key = (model, stage, r["suite"])
            item = {"model": model, "stage": stage, "suite": r["suite"], "id": r["id"], "prompt": r["prompt"],
                    "completion": r["completion"], "kind": "harmful" if r["suite"] in HARMFUL_SUITES else "benign"}
            groups.setdefault(key, [])
            if all(x["id"] != item["id"] for x in groups[key]):
                groups[key].append(item)
    last_step = max((int(k[1].split()[-1]) for k in groups if k[1].startswith("attacked")), default=0)
    items = []
    for key in sorted(groups):
        if key[1].startswith("attacked") and not key[1].endswith(f" {last_step}"):
            continue
        g = groups[key]
        rng.shuffle(g)
        items += g[:per_group]
    for i, it in enumerate(items):
        it["item"] = i
    return items


def generate(models: dict[str, str], limit: int = 34, max_new_tokens: int = 64, seed: int = 0) -> list[dict]:
    """Each model's greedy answers on the harm, borderline and XSTest-safe suites (the first
    ``limit`` of each split's fixed order), shuffled together with a fixed seed."""
    from tamperlab.evaluation.config import EvalConfig
    from tamperlab.evaluation.runner import evaluate

    items = []
    for name, model in models.items():
        out = ROOT / "runs" / "validation" / name
        evaluate(model, EvalConfig(suite=["harm", "borderline", "overrefusal"], limit=limit,
                                   max_new_tokens=max_new_tokens, batch_size=limit, judge="compliance"), out)
        for r in _read(out / "samples.jsonl"):
            items.append({"model": name, "stage": "before attack", "suite": r["suite"], "id": r["id"],
                          "prompt": r["prompt"], "completion": r["completion"],
                          "kind": "harmful" if r["suite"] in HARMFUL_SUITES else "benign"})
    random.Random(seed).shuffle(items)
    for i, it in enumerate(items):
        it["item"] = i
    return items


GROUPS = ("undefended", "refusal-sft", "antidote", "attacked")
SECOND_SET = 204  # items from here on came from the demo study (sample), before from generate
AS_USED = "harm-classifier, as the suites use it"  # harmful head on harmful prompts, complied head on benign


def group(r: dict) -> str:
    """Which model an item's answer came from: a model before any attack, or any attacked model."""
    return "attacked" if r["stage"].startswith("attacked") else r["model"]


def agreement(labels: list[dict]) -> dict:
    from tamperlab.judges import get_judge

    human = [r["label"] == "complied" for r in labels]
    prompts, completions = [r["prompt"] for r in labels], [r["completion"] for r in labels]
    out = {"n": len(labels), "labels": {k: sum(r["label"] == k for r in labels) for k in ("refused", "complied", "degenerate")},
           "by_kind": {k: sum(r["kind"] == k for r in labels) for k in ("harmful", "benign")},
           "by_group": {g: sum(group(r) == g for r in labels) for g in GROUPS}, "judges": {}}
    cache: dict[str, list] = {}
    preds: dict[str, list[bool]] = {}
    for name in ("refusal-keyword", "refusal-classifier", "harm-classifier", "compliance", AS_USED):
        judge = "harm-classifier" if name == AS_USED else name
        js = cache.setdefault(judge, get_judge(judge).judge(prompts, completions))
        pred = []
        for r, j in zip(labels, js):
            if name == AS_USED:  # as the suites count it: harmful_rate on harmful prompts, not_complied on benign
                pred.append(bool(j.harmful) if r["kind"] == "harmful" else bool(j.complied))
            else:  # "complied or not": the judge's own complied verdict, else not refused
                pred.append(bool(j.complied) if j.complied is not None else not j.refused)
        agree = [p == h for p, h in zip(pred, human)]
        row = {"agreement": round(sum(agree) / len(agree), 3)}
        for kind in ("harmful", "benign"):
            a = [x for x, r in zip(agree, labels) if r["kind"] == kind]
            row[kind] = round(sum(a) / len(a), 3) if a else None
        for grp in GROUPS:
            a = [x for x, r in zip(agree, labels) if group(r) == grp]
            row[grp] = round(sum(a) / len(a), 3) if a else None
        out["judges"][name] = row
        preds[name] = pred
    # the rates a report would print, by reader and by judge, on the same items: per model, stage and kind
    out["rates"] = []
    def source(r: dict) -> str:
        return "first set (generate, 64 tokens)" if r["item"] < SECOND_SET else "docs/demo (40 tokens)"

    keys = sorted({(source(r), r["model"], r["stage"], r["kind"]) for r in labels})
    for key in keys:
        idx = [i for i, r in enumerate(labels) if (source(r), r["model"], r["stage"], r["kind"]) == key]
        row = {"source": key[0], "model": key[1], "stage": key[2], "kind": key[3], "n": len(idx),
               "readers": round(sum(human[i] for i in idx) / len(idx), 3)}
        row.update({name: round(sum(p[i] for i in idx) / len(idx), 3) for name, p in preds.items()})
        out["rates"].append(row)
    return out


def merge_second_set() -> None:
    """Join the second set's readers into labels.jsonl: each item once (where both readers labelled an
    item, the first reader's label is kept and both go to labels-2-double.jsonl for the reader
    agreement)."""
    items = {r["item"]: r for r in _read(OUT / "items-2.jsonl")}
    got: dict[int, list[dict]] = {}
    for f in sorted(OUT.glob("labels-2-reader-*.jsonl")):
        for r in _read(f):
            if r["item"] not in items or r["label"] not in ("refused", "complied", "degenerate"):
                raise SystemExit(f"{f.name}: bad row {r}")
            got.setdefault(r["item"], []).append(r)
    missing = sorted(set(items) - set(got))
    if missing:
        raise SystemExit(f"items without a label: {missing[:10]} ({len(missing)})")
    first = [r for r in _read(OUT / "labels.jsonl") if r["item"] < min(items)]
    merged = first + [{**items[i], **{k: got[i][0][k] for k in ("label", "note", "labeller")}} for i in sorted(got)]
    double = [{**items[i], **r} for i in sorted(got) if len(got[i]) > 1 for r in got[i]]
    (OUT / "labels.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in merged))
    (OUT / "labels-2-double.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in double))
    print(f"{len(merged)} labelled items ({len(got)} new, {len(double) // 2} labelled twice)")


def crossfit(labels: list[dict], folds: int = 5, cs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0), X=None,
             standardise: bool = False) -> dict:
    """Could a head fitted on our own labels do better? Out-of-fold agreement of a logistic
    regression on features ``X`` (default: the harm judge's) plus the prompt kind, fitted on the
    other folds' items with folds grouped by prompt, so no prompt is scored by a head that saw it. C
    is chosen by an inner grouped split of the training folds alone. This is an estimate of what
    such a head would reach, not a judge the toolkit ships."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if X is None:
        from tamperlab.judges.harm import EMBED_CACHE, EmbeddingCache, features

        X = features([r["prompt"] for r in labels], [r["completion"] for r in labels], EmbeddingCache(EMBED_CACHE))
    X = np.concatenate([X, np.array([[r["kind"] == "harmful"] for r in labels], dtype=float)], axis=1)
    y = np.array([r["label"] == "complied" for r in labels])
    groups = np.array([r["id"] for r in labels])

    def head(c: float):
        lr = LogisticRegression(C=c, max_iter=5000)
        return make_pipeline(StandardScaler(), lr) if standardise else lr

    oof = np.zeros(len(y), dtype=bool)
    chosen = []
    for tr, te in GroupKFold(folds).split(X, y, groups):
        best = None
        for c in cs:
            inner = []
            for itr, ite in GroupKFold(3).split(X[tr], y[tr], groups[tr]):
                m = head(c).fit(X[tr][itr], y[tr][itr])
                inner.append((m.predict(X[tr][ite]) == y[tr][ite]).mean())
            if best is None or np.mean(inner) > best[0]:
                best = (float(np.mean(inner)), c)
        chosen.append(best[1])
        oof[te] = head(best[1]).fit(X[tr], y[tr]).predict(X[te])
    agree = oof == y
    out = {"folds": folds, "grouped_by": "prompt id", "C_chosen": chosen,
           "agreement": round(float(agree.mean()), 3)}
    for kind in ("harmful", "benign"):
        m = np.array([r["kind"] == kind for r in labels])
        out[kind] = round(float(agree[m].mean()), 3)
    for grp in GROUPS:
        m = np.array([group(r) == grp for r in labels])
        out[grp] = round(float(agree[m].mean()), 3) if m.any() else None
    return out


HIDDEN_LAYERS = (12, 18)  # of SmolLM2-135M's 30; a probe over layers 6-30 read best in the middle
HIDDEN_TOKENS = 96


def hidden_features(labels: list[dict], model: str = "smollm2-135m-instruct"):
    """The default model reading each item: its hidden states at ``HIDDEN_LAYERS``, averaged over
    the completion's tokens (the first ``HIDDEN_TOKENS``), after the prompt in the chat template.
    Tells whether a judge made of the only language model that ships offline reads delivery better
    than sentence embeddings do."""
    import numpy as np
    import torch

    from tamperlab.models import load_model
    from tamperlab.prompts.formats import format_prompt

    lm = load_model(model)
    tok, rows = lm.tokenizer, []
    with torch.no_grad():
        for r in labels:
            p = tok(format_prompt(tok, r["prompt"], "chat"), add_special_tokens=False)["input_ids"]
            c = tok(r["completion"], add_special_tokens=False)["input_ids"][:HIDDEN_TOKENS] or [tok.eos_token_id]
            hs = lm.model(torch.tensor([p + c], device=lm.device), output_hidden_states=True).hidden_states
            rows.append(np.concatenate([hs[k][0, len(p):].float().mean(0).cpu().numpy() for k in HIDDEN_LAYERS]))
    return np.array(rows)


def readers(labels: list[dict], double: list[dict]) -> dict:
    """How often two readers gave the same label to the same item (all three labels, and complied
    or not): the ceiling a judge's agreement with one reader can be read against."""
    by = {}
    for r in double:
        by.setdefault(r["item"], {})[r["labeller"]] = r["label"]
    pairs = [tuple(v.values()) for v in by.values() if len(v) == 2]
    same = sum(a == b for a, b in pairs)
    same_c = sum((a == "complied") == (b == "complied") for a, b in pairs)
    return {"n": len(pairs), "same_label": round(same / len(pairs), 3) if pairs else None,
            "same_complied_or_not": round(same_c / len(pairs), 3) if pairs else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("study", type=Path)
    s.add_argument("--per-group", type=int, default=30)
    s.add_argument("--skip", nargs="*", default=[], help="models whose answers are not sampled")
    s.add_argument("--first-item", type=int, default=0, help="number of the first item (after an earlier set)")
    s.add_argument("--out", type=Path, default=OUT / "items.jsonl")
    g = sub.add_parser("generate")
    g.add_argument("models", nargs="+", help="NAME=MODEL (a preset or a model directory)")
    sub.add_parser("agreement")
    sub.add_parser("merge", help="labels-2-reader-*.jsonl + items-2.jsonl -> labels.jsonl (second set)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.cmd in ("sample", "generate"):
        items = (sample(a.study, a.per_group, skip=tuple(a.skip)) if a.cmd == "sample"
                 else generate(dict(m.split("=", 1) for m in a.models)))
        path = a.out if a.cmd == "sample" else OUT / "items.jsonl"
        for it in items:
            it["item"] += getattr(a, "first_item", 0)
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))
        print(f"{len(items)} items -> {path}")
    elif a.cmd == "merge":
        merge_second_set()
    else:
        labels = _read(OUT / "labels.jsonl")
        res = agreement(labels)
        double = OUT / "labels-2-double.jsonl"
        if double.exists():
            res["readers"] = readers(labels, _read(double))
        res["crossfit"] = crossfit(labels)
        res["crossfit_hidden"] = {**crossfit(labels, cs=(0.001, 0.003, 0.01, 0.03, 0.1), X=hidden_features(labels),
                                             standardise=True),
                                  "model": "smollm2-135m-instruct", "layers": list(HIDDEN_LAYERS),
                                  "tokens": HIDDEN_TOKENS}
        (OUT / "agreement.json").write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
