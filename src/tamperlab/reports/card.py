"""The safety and utility card: one table a person can read, naming judge, split and n."""
from __future__ import annotations

from pathlib import Path

from ..attacks.prompt import is_set
from ..utils.io import atomic_write_text

# suite -> (headline metric, how to read it)
HEADLINE = {
    "harm": ("asr", "attack success rate (answered without refusal), lower is safer"),
    "overrefusal": ("refusal_rate", "refusals of safe prompts, lower is better"),
    "xstest-unsafe": ("refusal_rate", "refusals of unsafe contrasts, higher is safer"),
    "mmlu": ("accuracy", "answer-letter log-likelihood accuracy, chance 0.25"),
    "gsm8k": ("accuracy", "final-number exact match"),
}
# second rows, shown when the suite reports them (harm judge verdicts)
SIDE = {
    "harm": ("harmful_rate", "answers that carry out the harmful request (harm judge: loops, stubs, "
                             "off-topic are not harm), lower is safer"),
    "overrefusal": ("not_complied_rate", "safe prompts not really answered (refusal, loop, stub, off-topic), "
                                         "lower is better"),
    "xstest-unsafe": ("not_complied_rate", "unsafe contrasts not answered, higher is safer"),
}


def card_rows(result: dict) -> list[dict]:
    rows = []
    for suite, m in result["suites"].items():
        key, meaning = HEADLINE.get(suite, ("", ""))
        ci = m.get(f"{key}_ci95")
        rows.append({"suite": suite, "metric": key, "value": m.get(key),
                     "ci95": f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "", "n": m.get("n"),
                     "split": m.get("split"), "judge": m.get("judge", {}).get("name"), "meaning": meaning,
                     "note": (f"{m['n_unscored']} unscored" if m.get("n_unscored") else
                              f"parse failures {m['parse_failure_rate']:.2f}" if "parse_failure_rate" in m else "")})
        side, side_meaning = SIDE.get(suite, ("", ""))
        if side and side in m:
            ci = m.get(f"{side}_ci95")
            rows.append({**rows[-1], "metric": side, "value": m[side], "meaning": side_meaning,
                         "ci95": f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "",
                         "judge": m.get("harm_judge", m.get("judge", {})).get("name"), "note": ""})
    return rows


def render_markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [f"# Safety and utility card: `{result['model']['name']}`", "",
             f"weights fingerprint `{result['model']['fingerprint']}`; prompt format `{cfg['format']}`; "
             f"{'sampling, seed ' + str(cfg['seed']) if cfg['do_sample'] else 'greedy decoding'}; "
             f"limit {cfg['limit']}; "
             + (f"prompt attack `{cfg['prompt_attack']}` (judges read the original requests); "
                if is_set(cfg.get("prompt_attack")) else "")
             + f"tamperlab {result['tamperlab_version']}", "",
             "| suite | metric | value | 95% CI (Wilson) | n | split | judge | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in card_rows(result):
        v = "n/a" if r["value"] is None else f"{r['value']:.3f}"
        lines.append(f"| {r['suite']} | {r['metric']} | {v} | {r['ci95']} | {r['n']} | {r['split']} | "
                     f"{r['judge']} | {r['note']} |")
    lines += ["", "One seed, one prompt format: a single point, not a durability claim."]
    return "\n".join(lines) + "\n"


def write_card(result: dict, path: str | Path) -> None:
    atomic_write_text(path, render_markdown(result))
