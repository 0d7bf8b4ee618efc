"""The self-play study's cross-play matrix: every method's trained attackers against every method's
trained defenders (and the undefended base), one row and one column per method, paired seed by seed.

    python scripts/selfplay_crossplay.py runs/selfplay runs/selfplay-crossplay [--set limit=20 ...]

It reads the study's config for the trained directories (models/NAME-KEY/, one per defense seed)
and runs ``tamperlab crossplay`` with ``NAME=DIR0+DIR1+...`` groups (resumable, like the study)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


SELF_PLAY = ("abs", "self-play")  # the methods that train an attacker


def groups(study: Path) -> tuple[list[str], list[str]]:
    from tamperlab.durability.config import DurabilityConfig
    from tamperlab.durability.runner import defense_dir
    from tamperlab.utils.config import from_dict, read_yaml_mapping

    cfg = from_dict(DurabilityConfig, read_yaml_mapping(study / "config.yaml"), source=str(study / "config.yaml"))
    cfg.validate()
    by_name: dict[str, list[str]] = {}
    bases, attackers = [], set()
    for spec, ds in cfg.trained_models():
        if ds is None:
            bases.append(f"{spec.name}={spec.model}")
            continue
        d = defense_dir(study, spec, ds)
        if not (d / "defense.json").exists():
            sys.exit(f"{d}: not trained yet (run the study first)")
        by_name.setdefault(spec.name, []).append(str(d))
        if spec.defense["method"] in SELF_PLAY:
            attackers.add(spec.name)
    entries = {name: f"{name}={'+'.join(ds)}" for name, ds in by_name.items()}
    return [e for n, e in entries.items() if n in attackers] + ["none"], list(dict.fromkeys(bases)) + list(entries.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="cross-play setting KEY=VALUE")
    args = ap.parse_args(argv)
    attackers, defenders = groups(args.study)
    from tamperlab.cli import main as cli

    sets = [x for s in args.sets for x in ("--set", s)]
    cli(["crossplay", "--attackers", ",".join(attackers), "--defenders", ",".join(defenders),
         "--out", str(args.out), *sets])  # click exits with the command's status
    return 0


if __name__ == "__main__":
    sys.exit(main())
