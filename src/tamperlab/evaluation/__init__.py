"""Evaluation suites (harm, over-refusal, MMLU, GSM8K) and the ``evaluate`` runner."""
from .config import EvalConfig
from .runner import evaluate
from .suites import SUITES

__all__ = ["EvalConfig", "evaluate", "SUITES"]
