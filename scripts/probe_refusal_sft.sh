#!/bin/bash
# Issue 15 probes (one defense seed each): refusal SFT trained longer (60 steps) under finer dev
# over-refusal checks, to see whether any checkpoint within the budget halves the harmful rate.
#   probe 1 "sft60":  borderline/dev check on 96 prompts
#   probe 2 "sft60c": the same plus the contrast/dev budget (60 prompts in XSTest's categories)
#   later probes (sft40v3, sft80v3u, sft80v3ui, sft80v3uc, sft80v3uci, sft80v3uc01) are described in the case below
# Each defended model is then evaluated on the comparison's before-attack suites (harmful/eval,
# XSTest-safe, borderline/eval, instructions/eval; n=50, 40 tokens, judge compliance) and on a dev
# harm set, the last 50 AdvBench prompts of harmful/attack (no defense trains on them).
# About 25 min per probe on 2 CPU cores. Usage: bash scripts/probe_refusal_sft.sh [OUT] [PROBE...]
set -euo pipefail
OUT=${1:-runs/probe}; shift || true
PROBES=${*:-sft60 sft60c}
TL=${TAMPERLAB:-.venv/bin/tamperlab}
mkdir -p "$OUT"
.venv/bin/python -c "
import json, sys; from tamperlab.data import get_split
rows = get_split('harmful/attack')[-50:]
open(sys.argv[1], 'w').write(''.join(json.dumps({'prompt': r['prompt'], 'id': r['id']}) + '\n' for r in rows))" "$OUT/dev-harm.jsonl"
EVAL=(--set limit=50 --set max_new_tokens=40 --set batch_size=25)
for p in $PROBES; do
  case $p in
    sft60)  extra=() ;;
    sft60c) extra=(--set check_contrast_n=60) ;;
    # recipe v3 (helpful answers in XSTest's categories) at 40 steps: dev checks only (defense seed 0
    # of the comparison config as first tried; docs/probes/models/sft40v3); evaluated like the others
    sft40v3) extra=(--set check_contrast_n=60 --set data_recipe=v3 --set steps=40) ;;
    # the comparison's refusal SFT (v3, helpful share 0.75) trained longer: 80 steps, checks every 20
    sft80v3u) extra=(--set check_contrast_n=60 --set data_recipe=v3 --set utility_fraction=0.75 --set steps=80
                     --set check_every=20) ;;
    # the same with the instruction-refusal check (60 instructions/dev prompts): does the third
    # budget catch what contrast/dev missed?
    sft80v3ui) extra=(--set check_contrast_n=60 --set data_recipe=v3 --set utility_fraction=0.75 --set steps=80
                      --set check_every=20 --set check_instructions_n=60) ;;
    # sft80v3ui plus the contrast term: per-token DPO preferring the helpful answer over a refusal on
    # contrast/defense-train prompts (weight 1): can the refusal half train for 80 steps without
    # spreading to prompts that only sound unsafe?
    sft80v3uc) extra=(--set check_contrast_n=60 --set data_recipe=v3 --set utility_fraction=0.75 --set steps=80
                      --set check_every=20 --set check_instructions_n=60 --set contrast_weight=1.0) ;;
    # sft80v3uc overshot: the DPO term pushed refusal openings down ~3 nats/token within 12 steps and
    # harmful prompts lost their refusals too. IPO (beta 2) aims at a margin of 0.25 nats/token and stops there
    sft80v3uci) extra=(--set check_contrast_n=60 --set data_recipe=v3 --set utility_fraction=0.75 --set steps=80
                       --set check_every=20 --set check_instructions_n=60 --set contrast_weight=1.0
                       --set contrast_loss=ipo) ;;
    # a tenth of the weight: a point between sft80v3ui and sft80v3uc on the same line, or off it?
    sft80v3uc01) extra=(--set check_contrast_n=60 --set data_recipe=v3 --set utility_fraction=0.75 --set steps=80
                        --set check_every=20 --set check_instructions_n=60 --set contrast_weight=0.1) ;;
    *) echo "unknown probe $p (sft60 | sft60c | sft40v3 | sft80v3u | sft80v3ui | sft80v3uc | sft80v3uci | sft80v3uc01)" >&2
       exit 2 ;;
  esac
  [ -f "$OUT/$p/defense.json" ] || $TL defend smollm2-135m-instruct --method sft --out "$OUT/$p" --set steps=60 \
      --set check_every=10 --set check_overrefusal_n=96 --set max_length=160 "${extra[@]}"
  $TL evaluate "$OUT/$p" --out "$OUT/evalset-$p" --set suite=harm,overrefusal,borderline,utility-nll,instructions "${EVAL[@]}"
  $TL evaluate "$OUT/$p" --out "$OUT/eval-$p" --set suite=harm --set prompts="$OUT/dev-harm.jsonl" "${EVAL[@]:2}"
done
# the undefended model on both, for the ratios
[ -f "$OUT/eval-smollm2-135m-instruct/metrics.json" ] || $TL evaluate smollm2-135m-instruct \
    --out "$OUT/eval-smollm2-135m-instruct" --set suite=harm --set prompts="$OUT/dev-harm.jsonl" "${EVAL[@]:2}"
[ -f "$OUT/evalset-smollm2-135m-instruct/metrics.json" ] || $TL evaluate smollm2-135m-instruct \
    --out "$OUT/evalset-smollm2-135m-instruct" --set suite=harm,overrefusal,borderline,utility-nll,instructions "${EVAL[@]}"
# the table docs/defenses.md quotes
.venv/bin/python - "$OUT" $PROBES <<'PY' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out, probes = Path(sys.argv[1]), sys.argv[2:]
def m(d):
    return json.loads((out / d / "metrics.json").read_text())["suites"]
print("| model | kept step (dev budget met) | dev harm: harmful rate / ASR (AdvBench tail, n=50) | HarmBench harmful rate / ASR (n=50) "
      "| XSTest-safe over-refusal | borderline/eval over-refusal | utility NLL | instructions not answered |")
print("|---|---|---|---|---|---|---|---|")
for name in ["smollm2-135m-instruct"] + probes:
    dev, ev = m(f"eval-{name}")["harm"], m(f"evalset-{name}")
    if name == "smollm2-135m-instruct":
        kept = "– (undefended)"
    else:
        info = json.loads((out / name / "defense.json").read_text())
        kept = f"{info['selected_step']} of {info['config']['steps']} ({'yes' if info['within_budget'] else 'no'})"
    print(f"| {name} | {kept} | {dev['harmful_rate']:.2f} / {dev['asr']:.2f} | {ev['harm']['harmful_rate']:.2f} / {ev['harm']['asr']:.2f} "
          f"| {ev['overrefusal']['refusal_rate']:.2f} | {ev['borderline']['refusal_rate']:.2f} | {ev['utility-nll']['nll']:.3f} "
          f"| {ev['instructions']['not_complied_rate']:.2f} |")
print("\nJudge `compliance` (harmful rate: `harm-classifier`; over-refusal: refusal rate), chat template, greedy, "
      "40 new tokens; one defense seed each; eval splits harmful/eval, xstest-safe/eval, borderline/eval, instructions/eval.")
PY
