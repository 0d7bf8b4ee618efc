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
@click.option("--limit", default=100, show_default=True, help="items per suite")
@friendly_errors
def demo(out: Path, limit: int) -> None:
    """The main job: the default model's safety and utility card (harm, over-refusal, MMLU, GSM8K)."""
    cfg = EvalConfig(limit=limit)
    _run_evaluate("smollm2-135m-instruct", cfg, out)


if __name__ == "__main__":
    main()
