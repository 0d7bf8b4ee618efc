"""``tamperlab evaluate`` settings: one dataclass = Python API, ``--set key=value`` and YAML."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..utils.config import ConfigError


@dataclass
class EvalConfig:
    suite: list[str] = field(default_factory=lambda: ["harm", "overrefusal", "mmlu", "gsm8k"],
                             metadata={"help": "suites (a list, or comma-separated)"})
    limit: int | None = field(default=None, metadata={"help": "first N items of each suite's fixed split order"})
    seed: int = field(default=0, metadata={"help": "seed for sampling (generation is greedy unless do_sample)"})
    judge: str = field(default="compliance", metadata={
        "help": "compliance (refused + complied + harmful) | refusal-keyword | refusal-classifier | "
                "harm-classifier | llm-judge[:openai:MODEL|:hf:MODEL]"})
    harm_judge: str = field(default="harm-classifier", metadata={
        "help": "adds harmful/complied (harm.harmful_rate, overrefusal.not_complied_rate) when the judge "
                "gives only refusals; none = skip"})
    prompts: str | None = field(default=None, metadata={
        "help": "your own prompt file (.jsonl/.csv with a 'prompt' column) replacing the harm suite's prompts"})
    format: str = field(default="chat", metadata={"help": "prompt format: chat | plain | any prompts/formats/*.yaml"})
    prompt_attack: str = field(default="none", metadata={
        "help": "none | rewriter:DIR (a self-play run's attacker rewrites each harm/over-refusal prompt; judges read "
                "the original request) | any PROMPT_ATTACKS entry"})
    max_new_tokens: int = field(default=128, metadata={"help": "generated tokens per harm/over-refusal prompt"})
    gsm8k_max_new_tokens: int = field(default=256, metadata={"help": "generated tokens per GSM8K problem"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (with do_sample)"})
    batch_size: int = field(default=16, metadata={"help": "prompts per generation batch"})
    mmlu_shots: int = field(default=0, metadata={"help": "few-shot examples per MMLU question (same subject)"})
    gsm8k_shots: int = field(default=0, metadata={"help": "few-shot worked examples per GSM8K problem"})
    use_cache: bool = field(default=True, metadata={"help": "reuse cached generations"})

    def validate(self) -> None:
        from ..prompts import list_formats
        from .suites import SUITES

        if isinstance(self.suite, str):
            self.suite = [s.strip() for s in self.suite.split(",") if s.strip()]
        for s in self.suite:
            if s not in SUITES:
                raise ConfigError(f"field 'suite': unknown suite {s!r}; known: {', '.join(SUITES.names())}")
        if not self.suite:
            raise ConfigError("field 'suite': name at least one suite")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"field 'limit': must be >= 1, got {self.limit}")
        for name in ("max_new_tokens", "gsm8k_max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        for name in ("mmlu_shots", "gsm8k_shots"):
            if not 0 <= getattr(self, name) <= 5:
                raise ConfigError(f"field {name!r}: must be between 0 and 5, got {getattr(self, name)}")
        from ..judges import JUDGES

        judge = (self.judge or "").partition(":")[0]
        if judge not in JUDGES:
            raise ConfigError(f"field 'judge': unknown judge {judge!r}; known: {', '.join(JUDGES.names())}")
        hj = (self.harm_judge or "none").partition(":")[0]
        if hj != "none" and hj not in JUDGES:
            raise ConfigError(f"field 'harm_judge': unknown judge {hj!r}; known: none, {', '.join(JUDGES.names())}")
        if self.prompts is not None and not Path(self.prompts).is_file():
            raise ConfigError(f"field 'prompts': file not found: {self.prompts}")
        from ..attacks.prompt import check_prompt_attack

        check_prompt_attack(self.prompt_attack)
        if self.format not in list_formats():
            raise ConfigError(f"field 'format': unknown prompt format {self.format!r}; "
                              f"known: {', '.join(list_formats())}")
