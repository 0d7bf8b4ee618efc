"""What every suite gets (model, config, cache, judge) and what it returns (metrics, samples)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ...generation import GenerationCache, GenerationConfig, generate
from ...models.loading import LoadedModel
from ...utils.registry import Registry


@dataclass
class SuiteContext:
    lm: LoadedModel
    cfg: Any  # EvalConfig
    cache: GenerationCache | None
    _judge: Any = field(default=None, repr=False)

    @property
    def judge(self):
        """Built on first use: MMLU/GSM8K-only runs never load a judge."""
        if self._judge is None:
            from ...judges import get_judge

            self._judge = get_judge(self.cfg.judge)
        return self._judge

    _harm_judge: Any = field(default=None, repr=False)
    harm_judge_used: bool = False

    @property
    def harm_judge(self):
        """The judge that adds harmful/complied verdicts beside a refusal-only judge (None: 'none')."""
        spec = getattr(self.cfg, "harm_judge", "harm-classifier") or "none"
        if spec == "none":
            return None
        if self._harm_judge is None:
            from ...judges import get_judge

            self._harm_judge = get_judge(spec)
        self.harm_judge_used = True
        return self._harm_judge

    def generate(self, prompts: list[str], max_new_tokens: int, description: str) -> list[str]:
        gcfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=self.cfg.do_sample,
                                temperature=self.cfg.temperature, seed=self.cfg.seed,
                                batch_size=self.cfg.batch_size)
        return generate(self.lm, prompts, self.cfg.format, gcfg, self.cache, description)

    def limited(self, rows: list[dict]) -> list[dict]:
        return rows[: self.cfg.limit] if self.cfg.limit else rows


class Suite(Protocol):
    name: str
    worse: dict[str, str]  # metric -> "higher" | "lower": which direction is worse (reports, verdicts)

    def run(self, ctx: SuiteContext) -> tuple[dict, list[dict]]:
        """(metrics block for metrics.json, one sample row per item for samples.jsonl)."""
        ...


SUITES: Registry = Registry("suite")
