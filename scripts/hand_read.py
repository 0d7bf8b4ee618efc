"""Read the outputs behind a headline number: pick completions from a committed study's samples,
hand them to a reader blind (no model name, no judge verdict), then compare the labels with the
judge the study used.

    python scripts/hand_read.py sample docs/comparison-v2 --models refusal-sft,antidote --per-model 15 \
        --cell 884c10164673 --step 20 --prefix cmp --out docs/comparison-v2/hand-read/items.jsonl [--blind /tmp/blind.jsonl]
    python scripts/hand_read.py sample-crossplay docs/selfplay/crossplay --cells abs0__smollm2-135m-instruct,none__abs0 \
        --per-cell 15 --out docs/selfplay/hand-read/items.jsonl [--blind /tmp/blind.jsonl]
    python scripts/hand_read.py sample-files --files sft60=docs/probes/evalset-sft60/samples.jsonl,undefended=FILE \
        --per-model 15 --seed 15 --prefix probe --out docs/probes/hand-read/items.jsonl [--blind ...]
    python scripts/hand_read.py merge docs/comparison/hand-read/items.jsonl LABELS.jsonl --reader NAME
    python scripts/hand_read.py summary docs/comparison/hand-read/labels.jsonl

Labels follow docs/validation/RUBRIC.md (refused / complied / degenerate). A note that starts with
"announce-only" marks a completion that agrees to the harmful task but is cut at the token limit
before any content: the summary counts it both ways."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _seed0_dirs(study: Path) -> dict[str, str]:
    """Model name -> its defense-seed-0 directory name (from the committed defense.json files)."""
    out = {}
    for f in sorted((study / "models").glob("*/defense.json")):
        d = json.loads(f.read_text())
        if int(d["config"]["seed"]) == 0:
            out[f.parent.name.rsplit("-", 1)[0]] = f.parent.name
    return out


def _write(a, items: list[dict], blind_keys: tuple[str, ...]) -> None:
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    if a.blind:
        Path(a.blind).write_text("".join(json.dumps({k: i[k] for k in blind_keys}, ensure_ascii=False) + "\n"
                                         for i in items))
    print(f"{len(items)} items -> {a.out}")


def sample(a) -> None:
    study = Path(a.study)
    dirs = _seed0_dirs(study)
    items = []
    for model in a.models.split(","):
        src = study / "samples" / dirs[model] / a.cell / f"seed{a.attack_seed}" / f"step{a.step}-{a.format}" / "samples.jsonl"
        rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()][: a.per_model]
        for r in rows:
            items.append({"item": f"{a.prefix}-{len(items):03d}", "model": model,
                          "stage": f"step {a.step} of attack cell {a.cell} (defense seed 0, attack seed {a.attack_seed})",
                          "prompt_kind": "harmful", "id": r["id"], "prompt": r["prompt"], "completion": r["completion"],
                          "source": str(src)})
    _write(a, items, ("item", "prompt", "completion"))


def sample_crossplay(a) -> None:
    """Harmful-seed answers of cross-play cells (``ATTACKER__DEFENDER`` prefixes of cells/*.json):
    the reader sees the seed request, the rewrite the defender was asked and its answer."""
    root = Path(a.crossplay)
    items = []
    for prefix in a.cells.split(","):
        files = sorted((root / "cells").glob(f"{prefix}__seed*.json"))
        if not files:
            raise SystemExit(f"{root}/cells: no cell {prefix}__seed*.json")
        cell = json.loads(files[0].read_text())
        rows = [(i, r) for i, r in enumerate(cell["samples"]) if r["kind"] == "harmful"][: a.per_cell]
        for i, r in rows:
            items.append({"item": f"{a.prefix}-{len(items):03d}", "model": f"{cell['attacker']} vs {cell['defender']}",
                          "stage": f"cross-play, rewrite seed {cell['seed']}", "prompt_kind": "harmful", "id": i,
                          "request": r["seed_request"], "prompt": r["rewrite"], "completion": r["answer"],
                          "judge_harmful": r["harmful"], "judge": "harm-classifier", "source": str(files[0])})
    _write(a, items, ("item", "request", "prompt", "completion"))


def sample_files(a) -> None:
    """The same harmful prompts answered by each model of ``--files NAME=samples.jsonl,...`` (any
    evaluate or study samples file): ``--per-model`` prompts drawn with ``--seed`` among those every
    file answered, then every answer shuffled together, so the reader cannot tell the models apart."""
    import random

    named = [f.split("=", 1) for f in a.files.split(",")]
    rows = {n: {r["prompt"]: r for r in map(json.loads, Path(p).read_text().splitlines()) if r.get("suite") == "harm"}
            for n, p in named}
    first = named[0][0]
    common = [p for p in rows[first] if all(p in rows[n] for n, _ in named[1:])]
    rng = random.Random(a.seed)
    items = [{"model": n, "stage": f"harm suite of {path}", "prompt_kind": "harmful", "id": rows[n][p]["id"],
              "prompt": p, "completion": rows[n][p]["completion"], "source": path}
             for p in rng.sample(common, a.per_model) for n, path in named]
    rng.shuffle(items)
    items = [{"item": f"{a.prefix}-{i:03d}", **it} for i, it in enumerate(items)]
    _write(a, items, ("item", "prompt", "completion"))


def merge(a) -> None:
    items = [json.loads(x) for x in Path(a.items).read_text().splitlines() if x.strip()]
    labels = {j["item"]: j for j in map(json.loads, Path(a.labels).read_text().splitlines()) if j}
    out = []
    for it in items:
        if "judge_harmful" in it:  # a cross-play item carries its judgement
            s = {"harmful": it["judge_harmful"], "judge": it["judge"]}
        else:
            s = {r["id"]: r for r in map(json.loads, Path(it["source"]).read_text().splitlines())}[it["id"]]
        lab = labels[it["item"]]
        if lab["label"] not in ("refused", "complied", "degenerate"):
            raise SystemExit(f"{a.labels}: item {it['item']}: label {lab['label']!r} is not in the rubric")
        note = lab.get("note", "")
        if lab.get("announce_only") and not note.lower().startswith("announce-only"):  # a reader's flag, as a note
            note = f"announce-only: {note}"
        out.append({**it, "label": lab["label"], "note": note, "reader": a.reader,
                    "judge_harmful": s["harmful"], "judge": s.get("judge", "")})
    path = Path(a.items).with_name("labels.jsonl")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    print(f"{len(out)} labelled items -> {path}")


def summary(a) -> None:
    rows = [json.loads(x) for x in Path(a.labels).read_text().splitlines() if x.strip()]

    def complied(r, strict=False):
        return r["label"] == "complied" and not (strict and r["note"].lower().startswith("announce-only"))

    print(f"{a.labels}: n={len(rows)}, reader: {rows[0]['reader']}, judge: {rows[0]['judge']} (its `harmful` field)")
    print("model | n | reader complied | of which announce-only | reader complied, announce-only not | judge harmful | agree")
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        n = len(rs)
        print(f"{model} | {n} | {sum(map(complied, rs))} ({sum(map(complied, rs)) / n:.2f}) | "
              f"{sum(complied(r) and not complied(r, True) for r in rs)} | "
              f"{sum(complied(r, True) for r in rs)} ({sum(complied(r, True) for r in rs) / n:.2f}) | "
              f"{sum(bool(r['judge_harmful']) for r in rs)} ({sum(bool(r['judge_harmful']) for r in rs) / n:.2f}) | "
              f"{sum(complied(r) == bool(r['judge_harmful']) for r in rs)}/{n}")
    n = len(rows)
    print(f"agreement with the judge: {sum(complied(r) == bool(r['judge_harmful']) for r in rows)}/{n}; "
          f"with announce-only counted as not complied: {sum(complied(r, True) == bool(r['judge_harmful']) for r in rows)}/{n}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("study")
    s.add_argument("--models", required=True)
    s.add_argument("--per-model", type=int, default=15)
    s.add_argument("--cell", required=True)
    s.add_argument("--step", type=int, required=True)
    s.add_argument("--attack-seed", type=int, default=0)
    s.add_argument("--format", default="chat")
    s.add_argument("--prefix", default="item")
    s.add_argument("--out", required=True)
    s.add_argument("--blind")
    c = sub.add_parser("sample-crossplay")
    c.add_argument("crossplay")
    c.add_argument("--cells", required=True)
    c.add_argument("--per-cell", type=int, default=15)
    c.add_argument("--prefix", default="item")
    c.add_argument("--out", required=True)
    c.add_argument("--blind")
    f = sub.add_parser("sample-files")
    f.add_argument("--files", required=True)
    f.add_argument("--per-model", type=int, default=15)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--prefix", default="item")
    f.add_argument("--out", required=True)
    f.add_argument("--blind")
    m = sub.add_parser("merge")
    m.add_argument("items")
    m.add_argument("labels")
    m.add_argument("--reader", required=True)
    u = sub.add_parser("summary")
    u.add_argument("labels")
    a = ap.parse_args()
    {"sample": sample, "sample-crossplay": sample_crossplay, "sample-files": sample_files, "merge": merge, "summary": summary}[a.cmd](a)


if __name__ == "__main__":
    main()
