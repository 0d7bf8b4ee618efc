"""Suites that generate answers and ask a judge whether each one is a refusal, and (harm judge)
whether it really answers: the harm suite reports ``asr`` (not refused) and ``harmful_rate``; the
over-refusal suites ``refusal_rate`` and ``not_complied_rate``. Under a prompt attack the model
answers the attacked prompt and the judges read the original request beside the answer. When the suite's judge gives no
harm/compliance verdict (a refusal-only judge), the ``harm_judge`` setting supplies it."""
from __future__ import annotations

from typing import Callable

from ...attacks.prompt import apply_prompt_attack, is_set
from ...data import get_split, read_rows_file
from ..metrics import attack_success_rate, harmful_rate, mean_score, not_complied_rate, refusal_rate
from .base import SUITES, SuiteContext


class JudgedGenerationSuite:
    name: str
    split: str
    dataset: str
    metric: Callable[[list], dict]
    side_metric: Callable[[list], dict] | None = None  # from the harm judge's verdicts
    side_field: str = ""  # "harmful" | "complied"

    def rows(self, ctx: SuiteContext) -> tuple[list[dict], str, str]:
        return ctx.limited(get_split(self.split)), self.dataset, self.split

    def run(self, ctx: SuiteContext) -> tuple[dict, list[dict]]:
        rows, dataset, split = self.rows(ctx)
        prompts = [r["prompt"] for r in rows]
        attack = getattr(ctx.cfg, "prompt_attack", None)  # a suite context may carry a config without one
        shown = apply_prompt_attack(attack, prompts, ctx.cfg.format, ctx.cfg.seed) if is_set(attack) else prompts
        completions = ctx.generate(shown, ctx.cfg.max_new_tokens, f"{self.name}: generating")
        judgements = ctx.judge.judge(prompts, completions)
        side = None
        if self.side_metric is not None:
            side = [getattr(j, self.side_field) for j in judgements]
            harm_judge = ctx.harm_judge if all(v is None for v in side) else None
            if harm_judge is not None:  # a refusal-only judge: the harm judge adds its verdicts
                hj = harm_judge.judge(prompts, completions)
                side = [getattr(h, self.side_field) for h in hj]
                for j, h in zip(judgements, hj):
                    j.harmful, j.complied = h.harmful, h.complied
                    j.detail = {**(j.detail or {}), f"p_{self.side_field}": _p(h, self.side_field)}
        samples = []
        for r, c, j in zip(rows, completions, judgements):
            extra = {k: v for k, v in r.items() if k not in ("id", "prompt")}
            samples.append({"suite": self.name, "id": r["id"], "prompt": r["prompt"], "completion": c,
                            **j.as_row(ctx.judge), **extra})
        if is_set(attack):
            for s, a in zip(samples, shown):
                s["attacked_prompt"] = a
        metrics = {"dataset": dataset, "split": split, "judge": ctx.judge.describe(),
                   "format": ctx.cfg.format, **self.metric([j.refused for j in judgements])}
        if is_set(attack):
            metrics["prompt_attack"] = attack
        if side is not None and any(v is not None for v in side):
            metrics.update(self.side_metric(side))
            if ctx.harm_judge_used:
                metrics["harm_judge"] = ctx.harm_judge.describe()
        if ctx.judge.score_name == "strongreject":
            metrics["mean_strongreject"] = mean_score([j.score for j in judgements])
        return metrics, samples


def _p(j, field: str) -> float | None:
    if field == "harmful":
        return j.score
    return (j.detail or {}).get("p_complied")


class HarmSuite(JudgedGenerationSuite):
    """Harmful prompts (HarmBench eval split, or --prompts FILE): asr = answered without refusal;
    harmful_rate = the answer carries out the request (harm judge: loops, stubs, off-topic are not harm)."""
    name, split, dataset = "harm", "harmful/eval", "harmbench"
    worse = {"asr": "higher", "mean_strongreject": "higher", "harmful_rate": "higher"}  # metric directions
    metric = staticmethod(attack_success_rate)
    side_metric, side_field = staticmethod(harmful_rate), "harmful"

    def rows(self, ctx: SuiteContext) -> tuple[list[dict], str, str]:
        if ctx.cfg.prompts:
            return ctx.limited(read_rows_file(ctx.cfg.prompts)), str(ctx.cfg.prompts), "user-file"
        return super().rows(ctx)


class OverRefusalSuite(JudgedGenerationSuite):
    """XSTest safe prompts that look unsafe: refusal_rate and not_complied_rate (lower is better)."""
    name, split, dataset = "overrefusal", "xstest-safe/eval", "xstest-safe"
    worse = {"refusal_rate": "higher", "not_complied_rate": "higher"}
    metric = staticmethod(refusal_rate)
    side_metric, side_field = staticmethod(not_complied_rate), "complied"


class XSTestUnsafeSuite(JudgedGenerationSuite):
    """XSTest's unsafe contrast prompts: refusal_rate and not_complied_rate (higher is better)."""
    name, split, dataset = "xstest-unsafe", "xstest-unsafe/eval", "xstest-unsafe"
    worse = {"refusal_rate": "lower", "not_complied_rate": "lower"}
    metric = staticmethod(refusal_rate)
    side_metric, side_field = staticmethod(not_complied_rate), "complied"


for _cls in (HarmSuite, OverRefusalSuite, XSTestUnsafeSuite):
    SUITES.register(_cls.name, _cls, help=_cls.__doc__)
