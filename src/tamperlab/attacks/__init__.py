"""Attacks on a model's weights, each an entry of ``ATTACKS`` (config class + run function +
threat-model text). The fine-tuning attack is the built-in entry; prompt-level and learned attackers
register the same way (see docs/durability.md, "Adding an attack")."""
from .data import ATTACK_DATA, load_attack_data
from .finetune import AttackConfig, run_attack
from .registry import ATTACKS, DEFAULT_KIND, AttackSpec, register_attack

__all__ = ["ATTACK_DATA", "load_attack_data", "AttackConfig", "run_attack", "ATTACKS", "DEFAULT_KIND", "AttackSpec",
           "register_attack"]
