"""Evaluation suites, one registry entry each; a suite declares its split, judge use and metrics."""
from .base import SUITES, Suite, SuiteContext
from . import judged, mmlu, gsm8k, utility  # noqa: F401  (register built-in suites)

__all__ = ["SUITES", "Suite", "SuiteContext"]
