"""Attacks on a model's weights. Fine-tuning attacks live here; prompt-level and learned attackers
are later modules registering in the same way."""
from .data import ATTACK_DATA, load_attack_data
from .finetune import AttackConfig, run_attack

__all__ = ["ATTACK_DATA", "load_attack_data", "AttackConfig", "run_attack"]
