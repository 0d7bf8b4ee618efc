"""Utility measures that move at 135M, beside MMLU and GSM8K (near chance there): the mean
per-token NLL of reference answers to held-out instructions (no generation, no judge; compare
it with the undefended model's), and two generated-and-judged rates on splits of our own:
answering held-out benign instructions, and over-refusal of borderline-but-safe prompts."""
from __future__ import annotations

from ...data import get_split
from ...training.data import SFTExample
from .base import SUITES, SuiteContext
from .judged import OverRefusalSuite


class UtilityNLLSuite:
    """Mean per-token NLL of the reference answers on instructions/eval (LIMA, Alpaca-GPT4): lower is better."""
    name = "utility-nll"
    worse = {"nll": "higher"}

    def run(self, ctx: SuiteContext) -> tuple[dict, list[dict]]:
        from ...defenses.checks import answer_nlls

        rows = ctx.limited(get_split("instructions/eval"))
        examples = [SFTExample(r["id"], r["prompt"], r["completion"]) for r in rows]
        terms = answer_nlls(ctx.lm.model, ctx.lm, examples, ctx.cfg.format)
        # per example too, so a reader can see which answers got harder
        samples = [{"suite": self.name, "id": ex.id, "prompt": ex.prompt, "nll": round(s / max(n, 1), 5),
                    "tokens": n} for ex, (s, n) in zip(examples, terms)]
        metrics = {"dataset": "lima+alpaca-gpt4", "split": "instructions/eval", "judge": {"name": "reference-nll"},
                   "format": ctx.cfg.format, "n": len(examples),
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
