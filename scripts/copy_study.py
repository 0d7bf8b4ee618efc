"""Copy what a finished durability study says into docs/ (what gets committed):

    python scripts/copy_study.py runs/comparison docs/comparison

config.yaml, results.csv, report.md/html and figures; each defense's defense.json, card.md and
training.png (``defenses/MODEL-seedS/``); and the step-0 and last-step ``samples.jsonl`` of every
model (``samples/...``, the same layout as the study), so anyone can read what was counted as harm
and as refusal. Weights, checkpoints and caches stay behind. The report is rebuilt in the copy
from its config and results alone (``tamperlab report``), with the defense budgets it can read."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def copy_study(src: Path, dst: Path) -> dict:
    from tamperlab.durability.report import rebuild_report
    from tamperlab.utils.config import from_dict, read_yaml_mapping
    from tamperlab.durability.config import DurabilityConfig
    from tamperlab.durability.runner import defense_dir

    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("config.yaml", "results.csv"):
        shutil.copy2(src / name, dst / name)
    cfg = from_dict(DurabilityConfig, read_yaml_mapping(src / "config.yaml"), source=str(src / "config.yaml"))
    cfg.validate()
    defenses = []
    for spec, ds in cfg.trained_models():
        if ds is None:
            continue
        d = defense_dir(src, spec, ds)
        # the copy keeps the study's layout (models/NAME-KEY/), so the report finds the budgets
        out = defense_dir(dst, spec, ds)
        out.mkdir(parents=True)
        for name in ("defense.json", "card.md", "training.png", "last_rollout.jsonl"):
            if (d / name).exists():
                shutil.copy2(d / name, out / name)
        defenses.append(str(out.relative_to(dst)))
    last = max(cfg.steps)
    n = 0
    # only this study's models: a study directory resumed from another may hold more
    mine = {f"{spec.name}-{spec.key(ds or 0)}" for spec, ds in cfg.trained_models()}
    for f in sorted((src / "samples").rglob("samples.jsonl")):
        step = int(f.parent.name.split("-")[0][4:])
        if step in (0, last) and f.relative_to(src / "samples").parts[0] in mine:
            rel = f.relative_to(src)
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)
            n += 1
    rebuild_report(dst)
    summary = {"defenses": defenses, "samples_files": n}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    a = ap.parse_args()
    copy_study(a.src, a.dst)
