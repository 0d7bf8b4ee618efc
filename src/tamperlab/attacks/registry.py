"""The attack registry: every attack the durability protocol, its report and the CLI can run.

An entry is a config dataclass plus an :class:`AttackSpec`. The protocol knows nothing about any
one attack; it needs from an entry only:

- ``config_cls``: a dataclass with a ``seed: int`` and a ``checkpoint_steps: list[int]`` field (the
  study fills both: seeds repeat an attack, checkpoint steps are where it is evaluated). If it has a
  ``steps`` field, a study sets it to the last checkpoint step and rejects any other value.
- ``run(model, cfg, on_checkpoint)``: attack the :class:`~tamperlab.models.LoadedModel` in place and
  call ``on_checkpoint(step, view)`` at every step of ``cfg.checkpoint_steps`` (step 0 = before the
  attack), ``view`` being the model as attacked so far.
- ``describe(cfgs, steps)``: the threat model that a list of configs (a study's cells) covers, in
  words; verdicts quote it, and claim nothing beyond it.
- ``step_unit``: what one step is ("optimizer step", "noise increment"), for reports.
- ``label(cfg)``: a short cell label for tables and figure panels (optional; by default the kind and
  the settings that differ from the config's defaults).
- ``key(cfg)``: the attack's identity, seed and checkpoint steps excluded (optional; by default a hash
  of the config and the kind).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from ..utils.hashing import stable_hash
from ..utils.registry import Registry

DEFAULT_KIND = "finetune"


def default_key(kind: str, cfg: Any) -> str:
    d = asdict(cfg)
    d.pop("seed", None)
    d.pop("checkpoint_steps", None)  # looking more often does not change the attack
    return stable_hash({"kind": kind, **d})[:12]


def default_label(kind: str, cfg: Any) -> str:
    """The kind and the settings that differ from the config class's defaults."""
    default = type(cfg)()
    shown = [f"{f.name}={getattr(cfg, f.name)}" for f in fields(cfg)
             if f.name not in ("seed", "checkpoint_steps", "steps") and getattr(cfg, f.name) != getattr(default, f.name)]
    return " ".join([kind] + shown)


@dataclass(frozen=True)
class AttackSpec:
    run: Callable[[Any, Any, Callable[[int, Any], None]], Any]
    describe: Callable[[list, list[int]], str]
    step_unit: str = "attack step"
    label: Callable[[Any], str] | None = None
    key: Callable[[Any], str] | None = None
    not_claimed: str = "longer attacks or other settings of this attack"


ATTACKS: Registry = Registry("attack")


def register_attack(name: str, config_cls: type, spec: AttackSpec, help: str = "") -> AttackSpec:
    """Register an attack; the config class is checked for the fields the protocol sets."""
    names = {f.name for f in fields(config_cls)}
    missing = [f for f in ("seed", "checkpoint_steps") if f not in names]
    if missing:
        raise TypeError(f"attack {name!r}: {config_cls.__name__} needs field(s) {', '.join(missing)}")
    return ATTACKS.register(name, spec, config_cls=config_cls, help=help)


def attack_key(kind: str, cfg: Any) -> str:
    spec: AttackSpec = ATTACKS.get(kind).obj
    return spec.key(cfg) if spec.key else default_key(kind, cfg)


def attack_label(kind: str, cfg: Any) -> str:
    spec: AttackSpec = ATTACKS.get(kind).obj
    return spec.label(cfg) if spec.label else default_label(kind, cfg)
