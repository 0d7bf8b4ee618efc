"""Pluggable judges; every result names the judge that produced it."""
from .base import JUDGES, Judge, Judgement, get_judge
from . import keyword, classifier, llm, harm  # noqa: F401  (register the built-in judges)

__all__ = ["JUDGES", "Judge", "Judgement", "get_judge"]
