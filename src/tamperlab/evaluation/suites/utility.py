"""Utility measures that move at 135M, beside MMLU and GSM8K (near chance there): the mean
per-token NLL of reference answers to held-out instructions (no generation, no judge; compare
it with the undefended model's), and two generated-and-judged rates on splits of our own:
answering held-out benign instructions, and over-refusal of borderline-but-safe prompts."""
from __future__ import annotations

import torch

from ...data import get_split
from ...models.loading import LoadedModel
from ...training.data import SFTExample, build_features, collate
from ...training.losses import token_logps
from .base import SUITES, SuiteContext
from .judged import OverRefusalSuite


def answer_nlls(model, lm: LoadedModel, examples: list[SFTExample], fmt: str, max_length: int = 256,
                batch_size: int = 8) -> list[tuple[float, int]]:
    """(summed NLL, completion tokens) of each reference completion, in order."""
    out: list[tuple[float, int]] = []
    was = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            feats = build_features(lm.tokenizer, examples[i:i + batch_size], fmt, max_length)
            b = collate(feats, lm.pad_id, lm.device)
            lp, mask = token_logps(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                   b["labels"])  # (B, T-1)
            out += [(float(-s), int(n)) for s, n in zip(lp.sum(-1), mask.sum(-1))]
    model.train(was)
    return out


def fitting(lm: LoadedModel, rows: list[dict], fmt: str, max_length: int = 256) -> tuple[list[dict], int]:
    """The rows whose prompt leaves room for an answer within ``max_length`` tokens, in order, and
    how many were left out: chosen before a limit is applied, so ``limit: 50`` still scores 50."""
    from ...training.data import fit_pool

    pool = [SFTExample(str(i), r["prompt"], r["completion"]) for i, r in enumerate(rows)]
    kept, _ = fit_pool(lm.tokenizer, pool, fmt, max_length)
    return [rows[int(e.id)] for e in kept], len(rows) - len(kept)


def utility_nll(model, lm: LoadedModel, examples: list[SFTExample], fmt: str, max_length: int = 256,
                batch_size: int = 8) -> float:
    """Mean per-token NLL of the reference completions (all tokens pooled)."""
    terms = answer_nlls(model, lm, examples, fmt, max_length, batch_size)
    return sum(s for s, _ in terms) / max(sum(n for _, n in terms), 1)


class UtilityNLLSuite:
    """Mean per-token NLL of the reference answers on instructions/eval (LIMA, Alpaca-GPT4): lower is better."""
    name = "utility-nll"
    worse = {"nll": "higher"}

    def run(self, ctx: SuiteContext) -> tuple[dict, list[dict]]:
        rows, left_out = fitting(ctx.lm, get_split("instructions/eval"), ctx.cfg.format)
        rows = ctx.limited(rows)
        examples = [SFTExample(r["id"], r["prompt"], r["completion"]) for r in rows]
        terms = answer_nlls(ctx.lm.model, ctx.lm, examples, ctx.cfg.format)
        # per example too, so a reader can see which answers got harder
        samples = [{"suite": self.name, "id": ex.id, "prompt": ex.prompt, "nll": round(s / max(n, 1), 5),
                    "tokens": n} for ex, (s, n) in zip(examples, terms)]
        metrics = {"dataset": "lima+alpaca-gpt4", "split": "instructions/eval", "judge": {"name": "reference-nll"},
                   "format": ctx.cfg.format, "n": len(examples), "left_out_too_long": left_out,
                   "nll": round(sum(s for s, _ in terms) / max(sum(n for _, n in terms), 1), 5)}
        return metrics, samples


class InstructionsSuite(OverRefusalSuite):
    """Held-out benign instructions (instructions/eval): refusal_rate and not_complied_rate, lower is better."""
    name, split, dataset = "instructions", "instructions/eval", "lima+alpaca-gpt4"


class BorderlineSuite(OverRefusalSuite):
    """Borderline-but-safe prompts of our own (borderline/eval, kept apart from XSTest): over-refusal."""
    name, split, dataset = "borderline", "borderline/eval", "rho-overrefusal+alpaca-edgy"


for _cls in (UtilityNLLSuite, InstructionsSuite, BorderlineSuite):
    SUITES.register(_cls.name, _cls, help=_cls.__doc__)
