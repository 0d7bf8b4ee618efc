"""``tamperlab durability``: defend (if asked), attack every cell × seed, evaluate at every
checkpoint step and prompt format, store each run's rows as it completes, then aggregate and report.

Resumable by construction: the database says which runs are done; re-running the same command
skips them, recomputes only unfinished runs (deterministically, so their rows come out the same),
and rebuilds the report."""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from ..utils.io import atomic_write_text
from ..utils.progress import progress
from .config import DurabilityConfig, ModelSpec, check_attacks_against_models
from .executors import EXECUTORS, TaskFailed
from .store import ResultStore

DB_NAME = "results.sqlite"
REFERENCE_CELL = "reference"  # an unattacked model's headline evaluation
BASELINE_CELL = "baseline"  # every model's extra (utility) evaluation before any attack
STEP0_CELLS = (REFERENCE_CELL, BASELINE_CELL)


def scalar_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("n", "n_scored", "n_unscored", "seconds", "shots", "left_out_too_long")}


def _row(p: dict, step: int, fmt: str, suite: str, m: dict, metric: str, value: float) -> dict:
    return {**{k: p[k] for k in ("model", "model_key", "cell", "cell_label", "eval_key", "seed")},
            "defense_seed": p.get("defense_seed"),
            "step": step, "format": fmt, "suite": suite, "metric": metric, "judge": m.get("judge", {}).get("name", ""),
            "split": m.get("split", ""), "n": int(m.get("n", 0)), "value": value}


def execute_run(p: dict) -> dict:
    """One model × cell × seed: attack, evaluating at each checkpoint step in every format.

    A pure task: a top-level function from plain data to plain data ({rows, artefacts, seconds}), so
    any executor (process pool, Ray, Slurm) can ship it; it never opens the study database."""
    from ..attacks import ATTACKS
    from ..evaluation.config import EvalConfig
    from ..evaluation.runner import evaluate
    from ..models import load_model
    from ..models.loading import weights_fingerprint
    from ..utils.config import from_dict

    t0 = time.perf_counter()
    lm = load_model(p["model_path"])
    rows: list[dict] = []
    seen: list[int] = []
    artefacts: list[str] = []

    def on_checkpoint(step, view) -> None:
        seen.append(step)
        for fmt in p["formats"]:
            ecfg = from_dict(EvalConfig, {**p["eval"], "format": fmt, "seed": p["seed"]})
            where = samples_path(p, step, fmt)
            for suite, m in evaluate(view, ecfg, where)["suites"].items():
                rows.extend(_row(p, step, fmt, suite, m, metric, value) for metric, value in scalar_metrics(m).items())
            if where is not None:
                artefacts.append(str(where / "samples.jsonl"))

    if p["cell"] in STEP0_CELLS:
        on_checkpoint(0, lm)
    else:
        kind = p["attack_kind"]
        if kind not in ATTACKS and p.get("attack_module"):
            importlib.import_module(p["attack_module"])  # a worker process: the module registering it
        entry = ATTACKS.get(kind)
        entry.obj.run(lm, entry.config_cls(**p["attack"], seed=p["seed"]), on_checkpoint)
        if weights_fingerprint(lm.model) != lm.fingerprint:  # the process's shared model: later runs use it
            raise RuntimeError(f"attack {kind!r} changed the weights of the model it was given ({p['model_path']}); "
                               "an attack must work on a copy")
        if sorted(seen) != sorted(p["attack"]["checkpoint_steps"]):
            raise RuntimeError(f"attack {kind!r} called on_checkpoint at steps {seen}; the study asked for "
                               f"{p['attack']['checkpoint_steps']}")
    return {"rows": rows, "artefacts": artefacts, "seconds": time.perf_counter() - t0}


def samples_path(p: dict, step: int, fmt: str) -> Path | None:
    """Where a run's evaluation at ``step`` writes metrics.json and samples.jsonl (every completion
    and its judgement, so anyone can read what was counted as harm and as refusal); None when the
    payload names no ``samples_dir``."""
    if not p.get("samples_dir"):
        return None
    return Path(p["samples_dir"]) / f"{p['model']}-{p['model_key']}" / p["cell"] / f"seed{p['seed']}" / f"step{step}-{fmt}"


def execute_defense(p: dict) -> dict:
    """Train one model's defense (a task like a run): payload -> {path, artefacts, seconds}."""
    from ..defenses import defend

    t0 = time.perf_counter()
    path = str(defend(p["base"], p["method"], out_dir=p["out_dir"], overrides=p["config"]))
    return {"path": path, "artefacts": [path], "seconds": time.perf_counter() - t0}


def defense_dir(out: Path, spec: ModelSpec, defense_seed: int) -> Path:
    """Where a study trains ``spec``'s defense for one defense seed."""
    return out / "models" / f"{spec.name}-{spec.key(defense_seed)}"


def budget_status(out: Path, spec: ModelSpec, defense_seed: int) -> dict | None:
    """What a trained defense says of its budget (``within_budget``, ``selected_step``, ``checks``,
    ``budget`` of its defense.json; ``checks`` None when it ran without dev checks), or None when
    the defense is not trained (yet) in study directory ``out``."""
    import json

    info = defense_dir(Path(out), spec, defense_seed) / "defense.json"
    if not info.exists():
        return None
    d = json.loads(info.read_text(encoding="utf-8"))
    return {k: d.get(k) for k in ("within_budget", "selected_step", "checks", "budget")}


def budget_statuses(cfg: DurabilityConfig, out: Path) -> dict[tuple[str, int], dict | None]:
    """:func:`budget_status` of every defended model and defense seed of the study, read once, in
    the study's order: (name, defense seed) -> status or None (not trained in ``out``)."""
    return {(spec.name, ds): budget_status(out, spec, ds) for spec, ds in cfg.trained_models() if ds is not None}


def defense_payloads(cfg: DurabilityConfig, out: Path) -> list[dict]:
    """One task per defended model and defense seed."""
    payloads = []
    for spec, ds in cfg.trained_models():
        if ds is not None:
            d = spec.defense_config(ds)
            payloads.append({"model": spec.name, "defense_seed": ds, "base": spec.model, "method": d.pop("method"),
                             "config": d, "out_dir": str(defense_dir(out, spec, ds))})
    return payloads


def describe_task(p: dict) -> str:
    """Which task, in words (for the error when it fails)."""
    if "method" in p:
        return f"defense {p['method']!r} of model {p['model']!r}, defense seed {p['defense_seed']} (into {p['out_dir']})"
    ds = "" if p.get("defense_seed") is None else f"defense seed {p['defense_seed']}, "
    return f"run of model {p['model']!r}, cell {p['cell_label']!r} ({p['cell']}), {ds}seed {p['seed']}"


class StudyTaskError(RuntimeError):
    """A defense or run of a study failed; ``payload`` says which (the message names it)."""

    def __init__(self, payload: dict, message: str):
        super().__init__(message)
        self.payload = payload


def run_tasks(executor: str, payloads: list[dict], job, workers: int, on_done) -> None:
    """Hand ``payloads`` to the executor; a failure becomes one StudyTaskError naming the task."""
    try:
        EXECUTORS.get(executor).obj(payloads, job, workers, on_done)
    except TaskFailed as e:
        raise StudyTaskError(e.payload, f"{describe_task(e.payload)} failed: {e}") from e.__cause__


def plan(cfg: DurabilityConfig, model_paths: dict[tuple[str, int | None], str]) -> list[dict]:
    """Every run: (model, defense seed) × cell × attack seed; ``model_paths`` maps (name, defense
    seed) to the model to load (None for a model without a defense)."""
    from ..attacks import ATTACKS

    eval_key = cfg.eval_key()
    base = {"eval": {k: v for k, v in cfg.eval.items()}, "formats": list(cfg.formats), "eval_key": eval_key}
    payloads = []
    cells = cfg.cells_expanded()  # once: every model is attacked by the same cells
    for spec, ds in cfg.trained_models():
        m = {"model": spec.name, "model_key": spec.key(ds or 0), "model_path": model_paths[(spec.name, ds)],
             "defense_seed": ds}
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
            module = ATTACKS.get(cell.kind).obj.run.__module__
            for seed in cfg.seed_list():
                payloads.append({**base, **m, "cell": cell.key, "cell_label": cell.label, "attack_kind": cell.kind,
                                 "attack_module": module, "attack": atk, "seed": seed})
    return payloads


def _run_key(p: dict) -> tuple:
    return p["model_key"], p["cell"], p["eval_key"], p["seed"]


def _stored_run(p: dict) -> dict:
    """What the runs table keeps of a payload (its attack with the kind)."""
    attack = {"kind": p["attack_kind"], **p["attack"]} if p.get("attack_kind") else p["attack"]
    return {**p, "attack": attack}


def run_study(cfg: DurabilityConfig, out_dir: str | Path, *, workers: int = 1, executor: str | None = None,
              raw_config: dict | None = None, report: bool = True) -> dict:
    """Run (or resume) a study and write DIR/results.sqlite, DIR/report.md and DIR/report.html.

    Defenses, then runs, are tasks handed to the executor; this driver alone writes the database."""
    cfg.validate()
    check_attacks_against_models(cfg)
    executor = executor or ("process" if workers > 1 else "local")
    EXECUTORS.get(executor)  # an unknown executor fails before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(raw_config or _plain(cfg), sort_keys=False))
    db = out / DB_NAME
    t0 = time.perf_counter()
    model_paths = {(spec.name, ds): spec.model for spec, ds in cfg.trained_models()}
    defenses = defense_payloads(cfg, out)
    if defenses:
        with progress(f"{cfg.name}: defenses", len(defenses)) as advance:
            def defended(p: dict, r: dict) -> None:
                model_paths[(p["model"], p["defense_seed"])] = r["path"]
                advance(1)
            run_tasks(executor, defenses, execute_defense, workers, defended)
    payloads = [{**p, "samples_dir": str(out / "samples")} for p in plan(cfg, model_paths)]
    finished: list[dict] = []
    with ResultStore(db) as store:
        store.set_meta("study", cfg.name)
        done = store.done_runs()
        pending = [p for p in payloads if _run_key(p) not in done]
        with progress(f"{cfg.name}: runs", len(pending)) as advance:
            def stored(p: dict, r: dict) -> None:
                store.add_run(_stored_run(p), r["rows"], r["seconds"])
                finished.append(p)
                advance(1)
            run_tasks(executor, pending, execute_run, workers, stored)
        mismatches = store.mismatches
    summary = {"runs_total": len(payloads), "runs_skipped": len(payloads) - len(pending),
               "runs_executed": len(finished), "seconds": round(time.perf_counter() - t0, 2),
               "mismatched_rows": mismatches}
    if report:
        from .report import write_report

        rows = study_rows(cfg, db, payloads)
        summary["report"] = str(write_report(cfg, rows, out, raw_config or _plain(cfg)))
    return summary


def study_rows(cfg: DurabilityConfig, db: Path, payloads: list[dict] | None = None) -> list[dict]:
    """The rows of this config's runs only: a study directory may also hold rows of an earlier
    version of the config (other cells or evaluation settings); those are kept but not reported."""
    payloads = payloads if payloads is not None else plan(cfg, {(s.name, ds): "" for s, ds in cfg.trained_models()})
    keys = {_run_key(p) for p in payloads}
    with ResultStore(db) as store:
        return [r for r in store.rows() if _run_key(r) in keys]


def _plain(cfg: DurabilityConfig) -> dict:
    d = asdict(cfg)
    d["models"] = [asdict(m) if isinstance(m, ModelSpec) else m for m in cfg.models]
    return d
