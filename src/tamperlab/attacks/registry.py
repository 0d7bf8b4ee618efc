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
- ``check_model(cfg, model)``: settings the attacked model cannot take (optional), checked before any
  work on the model's architecture built on the meta device (no weights); raise ConfigError.
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
    check_model: Callable[[Any, Any], None] | None = None


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


def run_registered_attack(model, kind: str, cfg: Any, out_dir=None, *, eval_cfg=None, save_checkpoints: bool = False,
                          merge: bool = False) -> dict:
    """Any registered attack on ``model`` (what ``tamperlab attack --kind`` runs): at every checkpoint
    step evaluate (``eval_cfg``: OUT/step-N/, OUT/summary.json) and save the weights
    (``save_checkpoints``: OUT/checkpoints/step-N/). Returns {step: suite metrics}.

    An attack whose ``run`` takes an ``out_dir`` keyword also writes its own files there (the
    fine-tuning attack: attack_config.json and train_log.jsonl)."""
    import inspect
    from pathlib import Path

    from ..models.loading import load_model
    from ..utils.io import atomic_write_json

    entry = ATTACKS.get(kind)
    spec: AttackSpec = entry.obj
    if hasattr(cfg, "validate"):
        cfg.validate()
    lm = load_model(model) if isinstance(model, str) else model
    out = Path(out_dir) if out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "attack_config.json", {"kind": kind, "model": lm.name, "fingerprint": lm.fingerprint,
                                                       "attack_key": attack_key(kind, cfg), **asdict(cfg)})
    results: dict[int, dict] = {}

    def on_checkpoint(step: int, view) -> None:
        if eval_cfg is not None:
            from ..evaluation.runner import evaluate

            results[step] = evaluate(view, eval_cfg, out / f"step-{step}" if out else None)["suites"]
            if out is not None:
                atomic_write_json(out / "summary.json", {str(k): v for k, v in sorted(results.items())})
        if save_checkpoints and out is not None and step > 0:
            from ..training.sft import save_model_dir

            save_model_dir(view.model, view.tokenizer, out / "checkpoints" / f"step-{step}", merge=merge)

    kwargs = {"out_dir": out} if out is not None and "out_dir" in inspect.signature(spec.run).parameters else {}
    spec.run(lm, cfg, on_checkpoint, **kwargs)
    return results


def summary_rows(results: dict) -> list[dict]:
    """Flatten {step: {suite: metrics}} into rows for a table."""
    rows = []
    for step, suites in sorted(results.items()):
        for suite, m in suites.items():
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("seconds", "n"):
                    rows.append({"step": step, "suite": suite, "metric": k, "value": v, "n": m.get("n")})
    return rows
