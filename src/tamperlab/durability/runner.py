"""``tamperlab durability``: defend (if asked), attack every cell × seed, evaluate at every
checkpoint step and prompt format, store each result as it completes, then aggregate and report.

Resumable by construction: the database says which runs are done; re-running the same command
skips them, recomputes only unfinished runs (deterministically, so their rows come out the same),
and rebuilds the report."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import yaml

from ..utils.io import atomic_write_text
from ..utils.progress import progress
from .config import DurabilityConfig, ModelSpec
from .executors import EXECUTORS
from .store import ResultStore

DB_NAME = "results.sqlite"
REFERENCE_CELL = "reference"  # an unattacked model's headline evaluation
BASELINE_CELL = "baseline"  # every model's extra (utility) evaluation before any attack
STEP0_CELLS = (REFERENCE_CELL, BASELINE_CELL)


def scalar_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("n", "n_scored", "n_unscored", "seconds", "shots")}


def execute_run(p: dict) -> dict:
    """One model × cell × seed: attack, evaluating at each checkpoint step in every format.
    A top-level function of plain data, so any executor (process pool, Ray, Slurm) can ship it."""
    from ..attacks.finetune import AttackConfig, run_attack
    from ..evaluation.config import EvalConfig
    from ..evaluation.runner import evaluate
    from ..models import load_model
    from ..utils.config import from_dict

    t0 = time.perf_counter()
    lm = load_model(p["model_path"])
    with ResultStore(p["db"]) as store:
        def on_checkpoint(step, view) -> None:
            for fmt in p["formats"]:
                ecfg = from_dict(EvalConfig, {**p["eval"], "format": fmt, "seed": p["seed"]})
                res = evaluate(view, ecfg)
                for suite, m in res["suites"].items():
                    judge = m.get("judge", {}).get("name", "")
                    for metric, value in scalar_metrics(m).items():
                        store.add_result({**{k: p[k] for k in ("model", "model_key", "cell", "cell_label",
                                                               "eval_key", "seed")},
                                          "step": step, "format": fmt, "suite": suite, "metric": metric,
                                          "judge": judge, "split": m.get("split", ""), "n": int(m.get("n", 0)),
                                          "value": value})

        if p["cell"] in STEP0_CELLS:
            on_checkpoint(0, lm)
        else:
            run_attack(lm, AttackConfig(**p["attack"], seed=p["seed"]), on_checkpoint=on_checkpoint)
        seconds = time.perf_counter() - t0
        store.mark_done(p, seconds)
        return {**{k: p[k] for k in ("model", "cell_label", "seed")}, "seconds": seconds,
                "mismatches": store.mismatches}


def prepare_model(spec: ModelSpec, out: Path) -> str:
    """The directory (or preset) the study attacks: the base, or the base after its defense."""
    if spec.defense is None:
        return spec.model
    from ..defenses import defend

    d = dict(spec.defense)
    method = d.pop("method")
    return str(defend(spec.model, method, out_dir=out / "models" / f"{spec.name}-{spec.key()}", overrides=d))


def plan(cfg: DurabilityConfig, db: Path, model_paths: dict[str, str]) -> list[dict]:
    eval_key = cfg.eval_key()
    base = {"db": str(db), "eval": {k: v for k, v in cfg.eval.items()}, "formats": list(cfg.formats),
            "eval_key": eval_key}
    payloads = []
    cells = cfg.cells_expanded()  # once: every model is attacked by the same cells
    for spec in cfg.models:
        m = {"model": spec.name, "model_key": spec.key(), "model_path": model_paths[spec.name]}
        if cfg.baseline_eval:
            payloads.append({**base, **m, "eval": dict(cfg.baseline_eval), "eval_key": cfg.eval_key(baseline=True),
                             "cell": BASELINE_CELL, "cell_label": "before any attack (baseline eval)",
                             "attack": {}, "seed": 0})
        if not spec.attack:
            payloads.append({**base, **m, "cell": REFERENCE_CELL, "cell_label": "before any attack",
                             "attack": {}, "seed": 0})  # one evaluation, whatever the seed list
            continue
        for cell in cells:
            atk = asdict(cell.attack)
            atk.pop("seed")
            for seed in cfg.seed_list():
                payloads.append({**base, **m, "cell": cell.key, "cell_label": cell.label, "attack": atk,
                                 "seed": seed})
    return payloads


def run_study(cfg: DurabilityConfig, out_dir: str | Path, *, workers: int = 1, executor: str | None = None,
              raw_config: dict | None = None, report: bool = True) -> dict:
    """Run (or resume) a study and write DIR/results.sqlite, DIR/report.md and DIR/report.html."""
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(raw_config or _plain(cfg), sort_keys=False))
    db = out / DB_NAME
    model_paths = {spec.name: prepare_model(spec, out) for spec in cfg.models}
    payloads = plan(cfg, db, model_paths)
    with ResultStore(db) as store:
        store.set_meta("study", cfg.name)
        done = store.done_runs()
    pending = [p for p in payloads if (p["model_key"], p["cell"], p["eval_key"], p["seed"]) not in done]
    finished: list[dict] = []
    executor = executor or ("process" if workers > 1 else "local")
    t0 = time.perf_counter()
    with progress(f"{cfg.name}: runs", len(pending)) as advance:
        def on_done(r: dict) -> None:
            finished.append(r)
            advance(1)
        EXECUTORS.get(executor).obj(pending, execute_run, workers, on_done)
    summary = {"runs_total": len(payloads), "runs_skipped": len(payloads) - len(pending),
               "runs_executed": len(finished), "seconds": round(time.perf_counter() - t0, 2),
               "mismatched_rows": sum(r["mismatches"] for r in finished)}
    if report:
        from .report import write_report

        rows = study_rows(cfg, db, payloads)
        summary["report"] = str(write_report(cfg, rows, out, raw_config or _plain(cfg)))
    return summary


def study_rows(cfg: DurabilityConfig, db: Path, payloads: list[dict] | None = None) -> list[dict]:
    """The rows of this config's runs only: a study directory may also hold rows of an earlier
    version of the config (other cells or evaluation settings); those are kept but not reported."""
    payloads = payloads if payloads is not None else plan(cfg, db, {s.name: "" for s in cfg.models})
    keys = {(p["model_key"], p["cell"], p["eval_key"], p["seed"]) for p in payloads}
    with ResultStore(db) as store:
        return [r for r in store.rows() if (r["model_key"], r["cell"], r["eval_key"], r["seed"]) in keys]


def _plain(cfg: DurabilityConfig) -> dict:
    d = asdict(cfg)
    d["models"] = [asdict(m) if isinstance(m, ModelSpec) else m for m in cfg.models]
    return d
