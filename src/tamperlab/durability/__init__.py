"""The durability protocol (Qi et al.): models × attack grid × seeds × steps × formats, stored
row by row in SQLite, aggregated over seeds, reported with durability curves and verdicts."""
from .aggregate import aggregate, bootstrap_ci, verdicts, worst_cases
from .config import DurabilityConfig, load_study
from .executors import EXECUTORS
from .runner import run_study
from .store import ResultStore

__all__ = ["aggregate", "bootstrap_ci", "verdicts", "worst_cases", "DurabilityConfig", "load_study", "EXECUTORS",
           "run_study", "ResultStore"]
