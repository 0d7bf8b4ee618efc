"""A defended model's card: what was trained, the loss curves of every player, the patch norm,
the dev checks of over-refusal and utility during training, and which checkpoint was kept and
whether it met the budget. Written beside the model (``card.md`` + ``training.png``)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..utils.io import atomic_write_text
from .checks import OVERREFUSAL

# (log key, panel title) of each curve panel; a panel is drawn when its key is logged
PANELS = [(("loss", "adv_loss"), "loss per step (defender / model, adversary)"),
          (("safety", "anchor", "lm", "kl"), "defender terms (per token)"),
          (("patch_norm",), "patch ‖ΔW‖_F (adversary)"),
          (("harmless", "lens_nll"), "RepNoise: harmless NLL, harmful logit-lens NLL"),
          (("noise_mmd",), "RepNoise: MMD(harmful states, noise)"),
          (("unperturbed",), "Vaccine: NLL without the perturbation"),
          (("align", "harm", "harm_after_step"), "Booster: alignment, harmful NLL before/after the step"),
          (("retain_lm", "tamper", "inner_first", "inner_last"), "TAR: retain NLL, tamper-resistance, inner attack"),
          (("r_attacker", "r_defender"), "self-play: mean reward per role"),
          (("harmful_rate", "benign_refusal_rate", "similarity"), "self-play: rollout judgements"),
          (("pg", "kl"), "self-play: policy-gradient and KL terms"),
          (("overrefusal", "overrefusal_contrast", "overrefusal_instructions"),
           "dev over-refusal (borderline/dev; contrast/dev, instructions/dev if checked)"),
          (("utility_nll",), "dev utility NLL (instructions/dev)")]


def _rows(log_path: Path) -> list[dict]:
    return [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()] if log_path.exists() else []


def training_figure(log_path: Path, png: Path, choice: dict | None = None) -> Path | None:
    """One panel per logged quantity family against step; the kept checkpoint marked."""
    rows = _rows(log_path)
    panels = [(keys, title) for keys, title in PANELS if any(k in r for r in rows for k in keys)]
    if not panels:
        return None
    from ..utils.plotting import pyplot, save_figure

    fig, axes = pyplot().subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (keys, title) in zip(axes[0], panels):
        for k in keys:
            for phase in sorted({r.get("phase", "") for r in rows if k in r}):
                pts = [(r["step"], r[k]) for r in rows if k in r and r.get("phase", "") == phase]
                if pts:  # the loss and patch norm are logged by both players' moves: one line each
                    label = f"{k} ({phase})" if phase and k in ("loss", "patch_norm") else k
                    ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=label)
        if choice and keys[0] in ("overrefusal", "utility_nll"):
            ax.axvline(choice.get("selected_step", 0), color="grey", ls="--", lw=1, label="kept")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    return save_figure(fig, png)


def budget_section(choice: dict | None, cfg=None) -> str:
    if not choice:
        why = ("`check_every: 0`" if hasattr(cfg, "check_every") else
               "this method has no dev checks; a study's before-attack evaluation reports its over-refusal and utility")
        return f"## Dev checks\n\nNone ({why}): the last step was kept without a budget check.\n"
    b = choice["budget"]
    further = [k for k in OVERREFUSAL if k != "overrefusal" and k in b]  # the checks beyond borderline/dev
    rows = "\n".join(f"| {r['step']} | {r['overrefusal']:.3f} (n={r['n_overrefusal']}) | "
                     + "".join(f"{r[k]:.3f} (n={r[OVERREFUSAL[k].n_key]}) | " for k in further)
                     + f"{r['utility_nll']:.4f} (n={r['n_utility']}) |" for r in choice["checks"])
    cols = ["step", OVERREFUSAL["overrefusal"].label, *(OVERREFUSAL[k].label for k in further), "dev utility NLL"]
    head = f"| {' | '.join(cols)} |\n|{'---|' * len(cols)}"
    extra = "".join(f", {OVERREFUSAL[k].label} {b[k]}" for k in further)
    verdict = ("within the budget" if choice["within_budget"] else
               "**outside the budget at every check**: the last step was kept, and a study marks this model")
    return (f"## Dev checks and the kept checkpoint\n\nStep 0 is the undefended model. Budget: over-refusal "
            f"{b['overrefusal']}{extra} (judge {b['judge']}), utility NLL {b['utility_nll']}; splits "
            f"{', '.join(b['splits'])}.\n\n{head}\n{rows}\n\n"
            f"Kept: step {choice['selected_step']}, {verdict}.\n")


def write_card(out: Path, title: str, summary: str, cfg, last: dict, choice: dict | None) -> Path:
    """card.md (+ training.png) in ``out``."""
    png = training_figure(out / "train_log.jsonl", out / "training.png", choice)
    conf = "\n".join(f"| {k} | {v} |" for k, v in asdict(cfg).items())
    fin = "\n".join(f"| {k} | {v:.4g} |" for k, v in last.items() if isinstance(v, float))
    fig = "![training curves](training.png)\n\n" if png else ""
    text = (f"# {title}\n\n{summary}\n\n{fig}{budget_section(choice, cfg)}\n## Config\n\n| key | value |\n|---|---|\n"
            f"{conf}\n\n## Final step\n\n| quantity | value |\n|---|---|\n{fin}\n")
    atomic_write_text(out / "card.md", text)
    return out / "card.md"
