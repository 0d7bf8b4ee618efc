"""Judge interface and registry.

A judge maps (prompt, completion) pairs to :class:`Judgement` s. Refusal judges fill ``refused``;
harm judges fill ``harmful`` and ``complied`` (and the ``compliance`` judge all three). ``refused`` is
None when the judge could not produce a verdict (e.g. unparseable LLM-judge output): such rows are counted and
reported, never silently scored."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..utils.registry import Registry


@dataclass
class Judgement:
    refused: bool | None
    score: float | None  # meaning given by the judge's ``score_name``
    raw: str | None = None  # the judge's own output, when it has one
    error: str | None = None  # why no verdict could be made
    harmful: bool | None = None  # harm judges: the answer carries out the harmful request
    complied: bool | None = None  # harm judges: a real, on-topic answer (not a refusal/loop/stub/off-topic)
    detail: dict | None = None  # further named scores (e.g. p_complied, degenerate)

    def as_row(self, judge: "Judge") -> dict:
        row = {"refused": self.refused, "score": self.score, "score_name": judge.score_name,
               "judge": judge.name}
        for key in ("harmful", "complied"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        if self.detail:
            row.update(self.detail)
        if self.raw is not None:
            row["judge_raw"] = self.raw
        if self.error is not None:
            row["judge_error"] = self.error
        return row


class Judge(Protocol):
    name: str
    score_name: str  # e.g. "p_refusal", "strongreject"

    def judge(self, prompts: list[str], completions: list[str]) -> list[Judgement]: ...

    def describe(self) -> dict:
        """Name and settings for results files. Never includes secrets."""
        ...


JUDGES: Registry = Registry("judge")


def get_judge(spec: str) -> Judge:
    """``name`` or ``name:arg`` (e.g. ``llm-judge:hf:smollm2-135m-instruct``)."""
    name, _, arg = spec.partition(":")
    factory = JUDGES.get(name).obj
    return factory(arg) if arg else factory()
