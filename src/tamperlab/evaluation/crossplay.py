"""Cross-play: every attacker's rewrites of held-out seed requests against every defender.

An attacker is a self-play output directory (its ``adapters/attacker``, or ``adapters/shared`` for
parameter-shared self-play, on the base model its defense.json names) or ``none`` (the seed request
itself, unrewritten). A defender is any model the loader accepts. For each attacker and sampling
seed the rewrites of the held-out seeds (``harmful/eval`` and ``borderline/eval``, disjoint from the
self-play training seeds) are made once and reused for every defender; each defender answers them
greedily. Per (attacker, defender, seed): the harmful rate on harmful seeds (harm judge on the
seed's request and the answer) and the answer rate on benign seeds (1 − refusal judge on the
seed's request and the answer: both judges read the request, as in evaluation and training). Each cell is written atomically as it finishes, so a crashed run resumes;
the matrix is mean [min, max] over replicates, with a heat map.

The spread a claim about a *method* needs covers its training seeds: an entry ``NAME=P0+P1+P2`` is
one row (or column) whose members are one method's training seeds, and member i of an attacker
group meets member i of a defender group (a single entry plays every replicate), so each cell's
spread runs over training seeds × rewrite sampling seeds."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data import get_split
from ..attacks.prompt import RewriteSettings, attacker_adapter, load_attacker
from ..attacks.prompt import rewrite as rewrite_requests
from ..models.loading import LoadedModel, load_model
from ..reports.quoted.fmt import mmm_of  # rounded as the docs quote it (half up): matrix.md and the README agree
from ..utils.config import ConfigError
from ..utils.io import atomic_write_json, atomic_write_text


@dataclass
class CrossplayConfig:
    seeds: int = field(default=3, metadata={"help": "rewrite sampling seeds (the spread)"})
    limit: int = field(default=20, metadata={"help": "held-out seeds per kind (harmful/eval, borderline/eval)"})
    rewrite_tokens: int = field(default=48, metadata={"help": "tokens per rewrite"})
    answer_tokens: int = field(default=48, metadata={"help": "tokens per defender answer (greedy)"})
    temperature: float = field(default=1.0, metadata={"help": "attacker sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "attacker nucleus sampling mass"})
    harm_judge: str = field(default="harm-classifier", metadata={"help": "judge of harm"})
    refusal_judge: str = field(default="refusal-classifier", metadata={"help": "judge of refusal"})
    format: str = field(default="chat", metadata={"help": "prompt format"})
    batch_size: int = field(default=20, metadata={"help": "prompts per generation batch"})

    def validate(self) -> None:
        for name in ("seeds", "limit", "rewrite_tokens", "answer_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")


def held_out_seeds(limit: int) -> list[tuple[str, str]]:
    return ([("harmful", r["prompt"]) for r in get_split("harmful/eval")[:limit]]
            + [("benign", r["prompt"]) for r in get_split("borderline/eval")[:limit]])


def rewrite(attacker: LoadedModel | None, seeds: list[tuple[str, str]], cfg: CrossplayConfig, seed: int) -> list[str]:
    """The attacker's rewrites of the seeds (``None``: the seeds themselves), as the prompt attack makes them."""
    if attacker is None:
        return [s for _, s in seeds]
    return rewrite_requests(attacker, [s for _, s in seeds], cfg.format, seed, RewriteSettings(
        tokens=cfg.rewrite_tokens, temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size))


def _label(spec: str) -> str:
    return "none" if spec == "none" else Path(spec).name or spec


def parse_group(entry: str, what: str) -> tuple[str, list[str]]:
    """``NAME=P0+P1+P2`` -> (NAME, [P0, P1, P2]): one row (or column) of the matrix whose members are
    the training seeds of one method; a plain ``P`` is a group of one, named after it."""
    name, eq, rest = entry.partition("=")
    if not eq:
        return _label(entry), [entry]
    members = [m.strip() for m in rest.split("+") if m.strip()]
    if not name.strip() or not members:
        raise ConfigError(f"{what} {entry!r}: expected NAME=PATH[+PATH...]")
    return name.strip(), members


def replicates(groups: list[tuple[str, list[str]]], seeds: int) -> int:
    """How many (training seed, sampling seed) replicates every cell has: groups of several members
    must all have the same number, and member i of an attacker group meets member i of a defender group;
    a group of one (``none``, an undefended model) plays in every replicate."""
    sizes = {len(m) for _, m in groups if len(m) > 1}
    if len(sizes) > 1:
        raise ConfigError(f"--attackers/--defenders: groups of training seeds differ in size ({sorted(sizes)}); "
                          "give every method the same seeds")
    return (sizes.pop() if sizes else 1) * seeds


def _member(members: list[str], r: int, seeds: int) -> tuple[str, int]:
    """Replicate r's member of a group and its sampling seed (0 for ``none``: its rewrites are the
    seeds themselves, whatever the seed)."""
    m = members[0 if len(members) == 1 else r // seeds]
    return m, 0 if m == "none" else r % seeds


def _cell_path(out: Path, a_spec: str, d_spec: str, k: int) -> Path:
    return out / "cells" / f"{_label(a_spec)}__{_label(d_spec)}__seed{k}.json"


def run_crossplay(attackers: list[str], defenders: list[str], out: str | Path, cfg: CrossplayConfig | None = None) -> dict:
    """``attackers``/``defenders``: specs or ``NAME=P0+P1+...`` groups (:func:`parse_group`)."""
    from ..generation import GenerationConfig, generate
    from ..judges import get_judge

    cfg = cfg or CrossplayConfig()
    cfg.validate()
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    seeds = held_out_seeds(cfg.limit)
    requests = [s for _, s in seeds]  # what both judges read beside each answer
    groups_a = [parse_group(a, "--attackers") for a in attackers]
    groups_d = [parse_group(d, "--defenders") for d in defenders]
    for what, groups in (("--attackers", groups_a), ("--defenders", groups_d)):
        labels = [g for g, _ in groups]
        members = [_label(m) for _, ms in groups for m in ms]
        if len(set(labels)) != len(labels) or len(set(members)) != len(members):
            raise ConfigError(f"{what}: two entries share a name ({labels}: {members}); give directories distinct names")
    n_rep = replicates(groups_a + groups_d, cfg.seeds)
    stored = out / "config.json"
    if stored.exists():  # a resume must not mix cells made with other settings
        old = json.loads(stored.read_text()).get("config", {})
        diff = sorted(k for k, v in asdict(cfg).items() if old.get(k, v) != v)
        if diff:
            raise ConfigError(f"{out}: holds a cross-play made with other settings ({', '.join(diff)}); "
                              "choose another --out or the same settings")
    for _, members in groups_a:  # every attacker is checked before hours of work, not when its turn comes
        for m in members:
            if m != "none":
                attacker_adapter(m, "--attackers")
    atomic_write_json(out / "config.json", {"attackers": attackers, "defenders": defenders, "config": asdict(cfg),
                                            "replicates": n_rep, "seed_splits": ["harmful/eval", "borderline/eval"]})
    harm_j, ref_j = get_judge(cfg.harm_judge), get_judge(cfg.refusal_judge)
    loaded: dict[str, LoadedModel | None] = {}
    for _, a_members in groups_a:
        for r in range(n_rep):
            a_spec, k = _member(a_members, r, cfg.seeds)
            a_name = _label(a_spec)
            rw_path = out / "rewrites" / f"{a_name}-seed{k}.json"
            if rw_path.exists():
                rewrites = json.loads(rw_path.read_text())
            else:
                if a_spec not in loaded:
                    loaded = {a_spec: None if a_spec == "none" else load_attacker(a_spec, "--attackers")}  # one attacker in memory
                rewrites = rewrite(loaded[a_spec], seeds, cfg, seed=k)
                rw_path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(rw_path, rewrites)
            for _, d_members in groups_d:
                d_spec, _ = _member(d_members, r, cfg.seeds)
                d_name = _label(d_spec)
                cell = _cell_path(out, a_spec, d_spec, k)
                if cell.exists():
                    continue
                defender = load_model(d_spec)
                answers = generate(defender, rewrites, cfg.format,
                                   GenerationConfig(max_new_tokens=cfg.answer_tokens, batch_size=cfg.batch_size),
                                   description=f"cross-play: {d_name} answering")
                harmful = [bool(j.harmful) for j in harm_j.judge(requests, answers)]
                refused = [bool(j.refused) for j in ref_j.judge(requests, answers)]
                h = [x for (kind, _), x in zip(seeds, harmful) if kind == "harmful"]
                b = [not x for (kind, _), x in zip(seeds, refused) if kind == "benign"]
                atomic_write_json(cell, {
                    "attacker": a_name, "defender": d_name, "seed": k, "n_harmful": len(h), "n_benign": len(b),
                    "harmful_rate": sum(h) / len(h), "benign_answer_rate": sum(b) / len(b),
                    "samples": [{"kind": kind, "seed_request": s, "rewrite": w, "answer": a, "harmful": hh, "refused": rr}
                                for (kind, s), w, a, hh, rr in zip(seeds, rewrites, answers, harmful, refused)]})
    return summarise(out, groups_a, groups_d, cfg)


def summarise(out: Path, groups_a: list[tuple[str, list[str]]], groups_d: list[tuple[str, list[str]]],
              cfg: CrossplayConfig) -> dict:
    """The matrix (mean, min, max over replicates per cell), matrix.json, matrix.md and the heat map."""
    n_rep = replicates(groups_a + groups_d, cfg.seeds)
    attackers, defenders = [g for g, _ in groups_a], [g for g, _ in groups_d]
    cells = {}
    for a, a_members in groups_a:
        for d, d_members in groups_d:
            paths = []
            for r in range(n_rep):
                (a_spec, k), (d_spec, _) = _member(a_members, r, cfg.seeds), _member(d_members, r, cfg.seeds)
                paths.append(_cell_path(out, a_spec, d_spec, k))
            # distinct runs only: two single entries (none x undefended) meet once, not once per replicate
            got = [json.loads(p.read_text()) for p in dict.fromkeys(paths)]
            cells[(a, d)] = {m: {"mean": sum(g[m] for g in got) / len(got), "min": min(g[m] for g in got),
                                 "max": max(g[m] for g in got)} for m in ("harmful_rate", "benign_answer_rate")}
            cells[(a, d)]["n"] = {"harmful": got[0]["n_harmful"], "benign": got[0]["n_benign"], "replicates": len(got)}
    training = max(1, n_rep // cfg.seeds)
    result = {"attackers": attackers, "defenders": defenders, "judges": [cfg.harm_judge, cfg.refusal_judge],
              "groups": {"attackers": dict(groups_a), "defenders": dict(groups_d)},
              "replicates": {"training_seeds": training, "sampling_seeds": cfg.seeds},
              "cells": [{"attacker": a, "defender": d, **v} for (a, d), v in cells.items()]}
    atomic_write_json(out / "matrix.json", result)
    spread = (f"{cfg.seeds} rewrite sampling seed{'s' * (cfg.seeds != 1)}" if training == 1 else
              f"{training} training seeds x {cfg.seeds} rewrite sampling seed{'s' * (cfg.seeds != 1)} (training seed i's "
              "attacker meets training seed i's defender)")
    lines = [f"# Cross-play: {len(attackers)} attackers x {len(defenders)} defenders",
             "", f"Held-out seeds: `harmful/eval` and `borderline/eval`, n={cfg.limit} each; {spread}; mean [min, max] "
             f"over them. Harm judge `{cfg.harm_judge}` (seed request + answer); "
             f"refusal judge `{cfg.refusal_judge}` (seed request + answer). A cell of two single entries (e.g. `none` "
             "against an undefended model) is one run.", ""]
    for metric, title in (("harmful_rate", "harmful rate on harmful seeds (attacker wins when high)"),
                          ("benign_answer_rate", "answer rate on benign seeds (defender wins when high)")):
        lines += [f"## {title}", "", "| attacker \\ defender | " + " | ".join(defenders) + " |",
                  "|---|" + "---|" * len(defenders)]
        for a in attackers:
            lines.append(f"| {a} | " + " | ".join(mmm_of(cells[(a, d)][metric]) for d in defenders) + " |")
        lines.append("")
    members = [f"- `{g}`: " + ", ".join(f"`{m}`" for m in ms) for g, ms in groups_a + groups_d if len(ms) > 1]
    if members:
        lines += ["Groups (in training-seed order):", "", *dict.fromkeys(members), ""]
    atomic_write_text(out / "matrix.md", "\n".join(lines) + "\n")
    heatmap(cells, attackers, defenders, out / "crossplay.png")
    return result


def heatmap(cells: dict, attackers: list[str], defenders: list[str], path: Path) -> Path:
    from ..utils.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 1.6 * len(defenders) * 2, 1.4 + 0.6 * len(attackers)), squeeze=False)
    for ax, (metric, title, cmap) in zip(axes[0], (("harmful_rate", "harmful rate (harmful seeds)", "Reds"),
                                                  ("benign_answer_rate", "answer rate (benign seeds)", "Greens"))):
        m = [[cells[(a, d)][metric]["mean"] for d in defenders] for a in attackers]
        ax.imshow(m, vmin=0, vmax=1, cmap=cmap)
        for i, a in enumerate(attackers):
            for j, d in enumerate(defenders):
                c = cells[(a, d)][metric]
                ax.text(j, i, mmm_of(c).replace(" [", "\n["), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(defenders)), defenders, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(attackers)), attackers, fontsize=7)
        ax.set_xlabel("defender")
        ax.set_ylabel("attacker")
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
