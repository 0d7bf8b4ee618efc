"""Suites that generate answers and ask a judge whether each one is a refusal."""
from __future__ import annotations

from typing import Callable

from ...data import get_split, read_rows_file
from ..metrics import attack_success_rate, mean_score, refusal_rate
from .base import SUITES, SuiteContext


class JudgedGenerationSuite:
    name: str
    split: str
    dataset: str
    metric: Callable[[list], dict]

    def rows(self, ctx: SuiteContext) -> tuple[list[dict], str, str]:
        return ctx.limited(get_split(self.split)), self.dataset, self.split

    def run(self, ctx: SuiteContext) -> tuple[dict, list[dict]]:
        rows, dataset, split = self.rows(ctx)
        prompts = [r["prompt"] for r in rows]
        completions = ctx.generate(prompts, ctx.cfg.max_new_tokens, f"{self.name}: generating")
        judgements = ctx.judge.judge(prompts, completions)
        samples = []
        for r, c, j in zip(rows, completions, judgements):
            extra = {k: v for k, v in r.items() if k not in ("id", "prompt")}
            samples.append({"suite": self.name, "id": r["id"], "prompt": r["prompt"], "completion": c,
                            **j.as_row(ctx.judge), **extra})
        metrics = {"dataset": dataset, "split": split, "judge": ctx.judge.describe(),
                   "format": ctx.cfg.format, **self.metric([j.refused for j in judgements])}
        if ctx.judge.score_name == "strongreject":
            metrics["mean_strongreject"] = mean_score([j.score for j in judgements])
        return metrics, samples


class HarmSuite(JudgedGenerationSuite):
    """Harmful prompts (HarmBench eval split, or --prompts FILE): ASR = answered without refusal."""
    name, split, dataset = "harm", "harmful/eval", "harmbench"
    worse = {"asr": "higher", "mean_strongreject": "higher"}  # declared metric directions
    metric = staticmethod(attack_success_rate)

    def rows(self, ctx: SuiteContext) -> tuple[list[dict], str, str]:
        if ctx.cfg.prompts:
            return ctx.limited(read_rows_file(ctx.cfg.prompts)), str(ctx.cfg.prompts), "user-file"
        return super().rows(ctx)


class OverRefusalSuite(JudgedGenerationSuite):
    """XSTest safe prompts that look unsafe: refusal_rate (lower is better)."""
    name, split, dataset = "overrefusal", "xstest-safe/eval", "xstest-safe"
    worse = {"refusal_rate": "higher"}
    metric = staticmethod(refusal_rate)


class XSTestUnsafeSuite(JudgedGenerationSuite):
    """XSTest's unsafe contrast prompts: refusal_rate (higher is better)."""
    name, split, dataset = "xstest-unsafe", "xstest-unsafe/eval", "xstest-unsafe"
    worse = {"refusal_rate": "lower"}
    metric = staticmethod(refusal_rate)


for _cls in (HarmSuite, OverRefusalSuite, XSTestUnsafeSuite):
    SUITES.register(_cls.name, _cls, help=_cls.__doc__)
