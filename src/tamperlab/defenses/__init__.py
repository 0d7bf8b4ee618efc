"""Defenses: each registers (name, config class, function) in DEFENSES and writes a model
directory that loads like any other model. ``sft`` (refusal SFT) is the baseline every table needs;
AntiDote, RepNoise, TAR, Vaccine and Booster register beside it."""
from .base import DEFENSES, defend
from . import antidote, booster, repnoise, selfplay, sft, tar, vaccine  # noqa: F401  (register built-in defenses)

__all__ = ["DEFENSES", "defend"]
