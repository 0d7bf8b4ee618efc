"""DIR/report.md and DIR/report.html: verdicts, durability curves (mean line, min–max band over
seeds, one panel per attack config, models overlaid), worst cases, every aggregate, the config.

Both files are rendered from one list of blocks, so they always say the same thing."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import yaml

from ..utils.io import atomic_write_text
from .runner import budget_statuses
from .aggregate import (INTERVAL_LABEL, MIN_SEEDS_FOR_INTERVAL, aggregate, seed_count, verdicts, worse_direction,
                        worst_cases)


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def plot_curves(agg: list[dict], suite: str, metric: str, fmt: str, path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [a for a in agg if a["suite"] == suite and a["metric"] == metric and a["format"] == fmt
            and a["cell"] != "baseline"]
    if not rows:
        return None
    cells = sorted({(a["cell"], a["cell_label"]) for a in rows if a["cell"] != "reference"}, key=lambda c: c[1])
    refs = [a for a in rows if a["cell"] == "reference"]
    models = sorted({a["model"] for a in rows if a["cell"] != "reference"})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models + sorted({r["model"] for r in refs}))}
    ncol = min(3, max(1, len(cells)))
    nrow = max(1, -(-len(cells) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False, sharey=True)
    for ax, (cell, label) in zip(axes.flat, cells):
        for m in models:
            pts = sorted((a for a in rows if a["cell"] == cell and a["model"] == m), key=lambda a: a["step"])
            if not pts:
                continue
            x = [a["step"] for a in pts]
            ax.plot(x, [a["mean"] for a in pts], marker="o", color=colors[m],
                    label=f"{m}: mean, band min–max over {seed_count(pts[0])}")
            ax.fill_between(x, [a["min"] for a in pts], [a["max"] for a in pts], color=colors[m], alpha=0.2,
                            linewidth=0)
        for r in refs:
            ax.axhline(r["mean"], color=colors[r["model"]], linestyle="--", linewidth=1,
                       label=f"{r['model']} (step 0, not attacked)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("attack step")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{suite} {metric}")
    if cells:
        axes.flat[0].set_ylim(-0.02, 1.02) if max(a["max"] for a in rows) <= 1 else None
        handles, labels = axes.flat[0].get_legend_handles_labels()
        # beside the panels, one line per model: nothing is cut off however many defenses there are
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def before_attack_blocks(cfg, agg: list[dict]) -> list[tuple]:
    """Every model before any attack: the headline metric and the baseline (utility) evaluation."""
    rows = [a for a in agg if a["step"] == 0 and (a["cell"] == "baseline" or
                                                 f"{a['suite']}/{a['metric']}" == cfg.metric)]
    if not rows:
        return []
    cols = sorted({(a["suite"], a["metric"], a["format"], a["judge"], a["split"], a["n"]) for a in rows},
                  key=lambda c: (f"{c[0]}/{c[1]}" != cfg.metric, c))
    table = [["model"] + [f"{s}/{m} ({f}; {j}; {sp}; n={n})" for s, m, f, j, sp, n in cols]]
    for spec in cfg.models:
        line = [spec.name]
        for s, m, f, j, sp, n in cols:
            hit = [a for a in rows if a["model"] == spec.name and (a["suite"], a["metric"], a["format"]) == (s, m, f)]
            line.append(_spread(hit[0]) if hit else "–")
        table.append(line)
    return [("h2", "Before any attack"),
            ("p", "Each model before any attack (greedy decoding: the value does not depend on the attack seed; a "
                  "defended model trained with several defense seeds shows mean [min, max] over them). "
                  "Columns name suite/metric (format; judge; split; n)."),
            ("table", table)]


def _spread(a: dict) -> str:
    return _fmt(a["mean"]) if len(set(a["values"])) == 1 else f"{_fmt(a['mean'])} [{_fmt(a['min'])}, {_fmt(a['max'])}]"


def budget_blocks(statuses: dict[tuple[str, int], dict | None]) -> list[tuple]:
    """Which defended models met the defense budget (``statuses``: :func:`runner.budget_statuses`,
    from each model's defense.json): a model outside it is marked here and in the verdicts, not
    silently compared. A column per further over-refusal check (contrast/dev, instructions/dev)
    that some model was checked on."""
    from ..defenses.checks import OVERREFUSAL

    extra = [k for k in OVERREFUSAL if k != "overrefusal"
             and any(b and any(k in r for r in b.get("checks") or []) for b in statuses.values())]
    table = [["model", "defense seed", "kept step", "budget", "dev over-refusal",
              *(f"{OVERREFUSAL[k].label} ({OVERREFUSAL[k].split})" for k in extra), "dev utility NLL", "met"]]
    blank = ["–"] * (3 + len(extra))
    for (name, ds), b in statuses.items():
        if b is None:
            table.append([name, str(ds), "–", *blank, "no defense.json in this directory"])
            continue
        if b.get("checks") is None:
            table.append([name, str(ds), str(b.get("selected_step", "last")), "no dev checks", *blank[1:], "unknown"])
            continue
        row = next((r for r in b["checks"] if r["step"] == b["selected_step"]), {})
        base = b["checks"][0]
        budget = "; ".join([f"over-refusal {b['budget']['overrefusal']}"]
                           + [f"{OVERREFUSAL[k].label} {b['budget'][k]}" for k in extra if k in b["budget"]]
                           + [f"NLL {b['budget']['utility_nll']}"])
        table.append([name, str(ds), str(b["selected_step"]), budget,
                      f"{_fmt(row.get('overrefusal', float('nan')))} (undefended {_fmt(base['overrefusal'])})",
                      *(f"{_fmt(row[k])} (undefended {_fmt(base[k])})" if k in row and k in base else "not checked"
                        for k in extra),
                      f"{row.get('utility_nll', float('nan')):.4f} (undefended {base['utility_nll']:.4f})",
                      "yes" if b["within_budget"] else "NO: outside the budget, not a matched comparison"])
    if all(r[-1] == "no defense.json in this directory" for r in table[1:]):
        return []  # a report rebuilt from results alone (no model directories): nothing to say
    splits = " and ".join(["borderline/dev", *(OVERREFUSAL[k].split for k in extra)])
    return [("h2", "Defense budget (matched utility)"),
            ("p", f"Each defense is checked during training on dev splits (over-refusal on {splits}, mean token NLL "
                  "of reference answers on instructions/dev) and keeps the last checked step within the budget; a "
                  "model that never was within it keeps its last step and is marked here."),
            ("table", table)]


def comparison_blocks(cfg, agg: list[dict]) -> list[tuple]:
    """Attacked models side by side per cell and step, and for each pair whether the better mean
    also holds seed by seed: the worse model's best seed is still worse than the better model's
    worst seed. Only then does this study separate the two; otherwise the ranges overlap."""
    suite, metric = cfg.metric.split("/", 1)
    sign = 1 if worse_direction(suite, metric) == "higher" else -1
    attacked = [m.name for m in cfg.models if m.attack]
    if len(attacked) < 2:
        return []
    pts = {(a["model"], a["cell"], a["step"], a["format"]): a for a in agg
           if a["suite"] == suite and a["metric"] == metric and a["cell"] != "baseline" and a["model"] in attacked}
    keys = sorted({(a["cell"], a["cell_label"], a["step"], a["format"]) for a in pts.values()},
                  key=lambda k: (k[1], k[3], k[2]))
    pairs = [(x, y) for i, x in enumerate(attacked) for y in attacked[i + 1:]]
    table = [["attack", "format", "step"] + [f"{m}: mean [min, max]" for m in attacked] +
             [f"{x} vs {y}" for x, y in pairs]]
    for cell, label, step, fmt in keys:
        got = {m: pts.get((m, cell, step, fmt)) for m in attacked}
        line = [label, fmt, str(step)] + [f"{_fmt(a['mean'])} [{_fmt(a['min'])}, {_fmt(a['max'])}]" if a else "–"
                                         for a in got.values()]
        for x, y in pairs:
            a, b = got[x], got[y]
            if a is None or b is None:
                line.append("–")
                continue
            better, worse = (a, b) if sign * a["mean"] < sign * b["mean"] else (b, a)
            if a["mean"] == b["mean"]:
                line.append("equal means")
            elif max(sign * v for v in better["values"]) < min(sign * v for v in worse["values"]):  # in "badness"
                line.append(f"{better['model']} better on every seed")
            else:
                line.append(f"{better['model']} better mean; ranges overlap")
        table.append(line)
    return [("h2", f"Models compared ({cfg.metric})"),
            ("p", "Per attack and step: each attacked model's mean [min, max] over seeds. A pair is separated only "
                  "when the better model's worst seed beats the other model's best seed; otherwise the difference is "
                  "within the seed spread and this study does not rank them."),
            ("table", table)]


def defense_seeds_note(cfg) -> str:
    if not any(s.defense is not None for s in cfg.models):
        return ""
    ds = cfg.defense_seed_list()
    if len(ds) == 1:
        return f"; defense seed {ds[0]} (each defended model was trained once: the spread covers attack seeds only)"
    return (f"; defense seeds {ds} (each defended model trained once per defense seed; its spreads cover "
            "defense × attack seeds)")


def interval_note(agg: list[dict]) -> str:
    """How the report treats intervals: a percentile bootstrap over fewer than 5 seeds is [min, max]."""
    note = (f". No interval is given for fewer than {MIN_SEEDS_FOR_INTERVAL} seeds: a percentile bootstrap of "
            "the mean over 3 or fewer seeds returns exactly [min, max], so min and max are the honest spread")
    if any(d is not None for a in agg for d in a.get("defense_seeds", [])):
        note += (f" (for a defended model the count is of defense seeds: its attack seeds share one trained model, so "
                 "they are not independent draws)")
    if any(a["ci_supported"] for a in agg):
        return (f", and where there are at least {MIN_SEEDS_FOR_INTERVAL} seeds a {INTERVAL_LABEL} (percentile "
                f"bootstrap of the mean, 10,000 resamples, fixed RNG){note}.")
    return note + "."


def step_units(cfg) -> str:
    """What one attack step is, per attack kind of the study (the ATTACKS entry says)."""
    from ..attacks import ATTACKS

    kinds = sorted({c.kind for c in cfg.cells_expanded()})
    units = [ATTACKS.get(k).obj.step_unit for k in kinds]
    return units[0] if len(units) == 1 else "; ".join(f"{k}: {u}" for k, u in zip(kinds, units))


def build_blocks(cfg, rows: list[dict], out: Path, raw_config: dict) -> list[tuple]:
    agg = aggregate(rows)
    suite, metric = cfg.metric.split("/", 1)
    blocks: list[tuple] = [("h1", f"Durability study: {cfg.name}")]
    seeds = cfg.seed_list()
    first = next((a for a in agg if a["suite"] == suite and a["metric"] == metric), None)
    blocks.append(("p", f"Headline metric {cfg.metric} ({worse_direction(suite, metric)} is worse), judge "
                        f"{first['judge'] if first else '?'}, split {first['split'] if first else '?'}, "
                        f"n={first['n'] if first else '?'} prompts per evaluation; attack seeds {seeds}"
                        f"{defense_seeds_note(cfg)}; checkpoint steps "
                        f"{cfg.steps} (a step: {step_units(cfg)}); prompt formats {cfg.formats}. Every number below "
                        f"is over the seeds: mean, min and max{interval_note(agg)}"))
    blocks.append(("h2", "Verdicts"))
    statuses = budget_statuses(cfg, out)  # every defense.json, read once for the verdicts and the table
    for v in verdicts(cfg, agg, statuses=statuses):
        blocks.append(("li", v["text"]))
    blocks += before_attack_blocks(cfg, agg)
    blocks += budget_blocks(statuses)
    blocks += comparison_blocks(cfg, agg)
    blocks.append(("h2", "Durability curves"))
    metrics = sorted({(a["suite"], a["metric"]) for a in agg if a["cell"] != "baseline"},
                     key=lambda sm: (sm != (suite, metric), sm))
    for s, m in metrics:
        for fmt in cfg.formats:
            p = plot_curves(agg, s, m, fmt, out / "figures" / f"{s}-{m}-{fmt}.png",
                            f"{cfg.name}: {s} {m} ({fmt} format) vs attack step")
            if p is not None:
                blocks.append(("img", str(p.relative_to(out)), f"{s} {m}, {fmt} format"))
    blocks.append(("h2", f"Worst case per model ({cfg.metric})"))
    wc = worst_cases(agg, suite, metric)
    table = [["model", "worst cell", "format", "step", "mean", "min", "max", "worst seed"]]
    for model, w in wc.items():
        a = w["worst_mean"]
        table.append([model, a["cell_label"], a["format"], str(a["step"]), _fmt(a["mean"]), _fmt(a["min"]),
                      _fmt(a["max"]), f"{_fmt(w['worst_seed']['value'])} ({w['worst_seed']['label']})"])
    blocks.append(("table", table))
    blocks.append(("h2", "All results"))
    show_ci = any(a["ci_supported"] for a in agg)
    table = [["model", "attack", "format", "suite/metric", "step", "mean", "min", "max"]
             + [INTERVAL_LABEL] * show_ci + ["seeds", "n"]]
    for a in agg:
        ci = f"[{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}]" if a["ci_supported"] else f"– (< {MIN_SEEDS_FOR_INTERVAL} seeds)"
        table.append([a["model"], a["cell_label"], a["format"], f"{a['suite']}/{a['metric']}", str(a["step"]),
                      _fmt(a["mean"]), _fmt(a["min"]), _fmt(a["max"])] + [ci] * show_ci
                     + [str(len(a["values"])), str(a["n"])])
    blocks.append(("table", table))
    blocks.append(("h2", "Exact config"))
    blocks.append(("code", yaml.safe_dump(raw_config, sort_keys=False)))
    blocks.append(("p", "Raw rows: results.csv (this study's rows) and results.sqlite (table results, one row per "
                        "model × attack × seed × step × format × suite × metric). Re-running the same command resumes or, when finished, only "
                        "rebuilds this report."))
    return blocks


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    prev = None
    for b in blocks:
        kind = b[0]
        if prev == "li" and kind != "li":
            out.append("")  # a list needs a blank line before what follows
        prev = kind
        if kind == "h1":
            out.append(f"# {b[1]}\n")
        elif kind == "h2":
            out.append(f"## {b[1]}\n")
        elif kind == "p":
            out.append(b[1] + "\n")
        elif kind == "li":
            out.append(f"- {b[1]}")
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})\n")
        elif kind == "code":
            out.append(f"```yaml\n{b[1]}```\n")
        elif kind == "table":
            rows = [[c.replace("|", "\\|") for c in r] for r in b[1]]
            out.append("| " + " | ".join(rows[0]) + " |")
            out.append("|" + "---|" * len(rows[0]))
            out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_html(blocks: list[tuple], out: Path) -> str:
    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>tamperlab durability report</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>"]
    in_list = False
    for b in blocks:
        if b[0] != "li" and in_list:
            parts.append("</ul>")
            in_list = False
        if b[0] == "h1":
            parts.append(f"<h1>{e(b[1])}</h1>")
        elif b[0] == "h2":
            parts.append(f"<h2>{e(b[1])}</h2>")
        elif b[0] == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "li":
            if not in_list:
                parts.append("<ul>")
                in_list = True
            parts.append(f"<li>{e(b[1])}</li>")
        elif b[0] == "img":
            data = base64.b64encode((out / b[1]).read_bytes()).decode()
            parts.append(f"<figure><img alt='{e(b[2])}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{e(b[2])}</figcaption></figure>")
        elif b[0] == "code":
            parts.append(f"<pre>{e(b[1])}</pre>")
        elif b[0] == "table":
            head, *body = b[1]
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</table>")
    if in_list:
        parts.append("</ul>")
    return "\n".join(parts) + "\n"


def write_rows_csv(rows: list[dict], path: Path) -> None:
    """This study's rows (one per model × attack × seed × step × format × suite × metric), plain CSV."""
    import csv
    import io

    from .store import ROW_FIELDS

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS), lineterminator="\n")
    w.writeheader()
    w.writerows({k: r.get(k) for k in ROW_FIELDS} for r in rows)  # None (no defense seed) -> ""
    atomic_write_text(path, buf.getvalue())


def read_rows_csv(path: Path) -> list[dict]:
    """Rows of a results.csv (as written by :func:`write_rows_csv`), typed as the store returns them."""
    import csv

    ints = ("seed", "step", "n")
    with open(path, newline="", encoding="utf-8") as f:  # a CSV written before defense seeds has no column
        return [{**r, **{k: int(r[k]) for k in ints}, "value": float(r["value"]) if r["value"] != "" else None,
                 "defense_seed": int(r["defense_seed"]) if r.get("defense_seed") not in (None, "") else None}
                for r in csv.DictReader(f)]


def rebuild_report(study_dir: str | Path) -> Path:
    """Re-render DIR/report.md, report.html and figures from DIR/config.yaml and DIR/results.csv
    alone: no model, no training, no database (a committed study can be re-reported anywhere)."""
    from ..utils.config import from_dict, read_yaml_mapping
    from .config import DurabilityConfig

    out = Path(study_dir)
    raw = read_yaml_mapping(out / "config.yaml")
    cfg = from_dict(DurabilityConfig, raw, source=str(out / "config.yaml"))
    return write_report(cfg, read_rows_csv(out / "results.csv"), out, raw, rows_csv=False)


def write_report(cfg, rows: list[dict], out: Path, raw_config: dict, rows_csv: bool = True) -> Path:
    if rows_csv:
        write_rows_csv(rows, out / "results.csv")
    blocks = build_blocks(cfg, rows, out, raw_config)
    atomic_write_text(out / "report.md", render_markdown(blocks))
    atomic_write_text(out / "report.html", render_html(blocks, out))
    return out / "report.md"
