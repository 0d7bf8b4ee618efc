"""Prompt attacks: change what the model is asked, not its weights. An entry of ``PROMPT_ATTACKS``
maps (argument, prompts, format, seed) to the prompts the model sees; evaluation then judges the
answers against the *original* requests (harm is measured against the request's intent, not the
attack's wording). ``--set prompt_attack=NAME[:ARG]`` on ``tamperlab evaluate`` applies one.

Built in: ``rewriter:DIR``, the attacker a self-play run trained (``tamperlab defend --method
abs|self-play``): it rewrites each request with the game's own instruction, sampled."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from ..models.loading import LoadedModel, load_model
from ..utils.config import ConfigError
from ..utils.registry import Registry

PROMPT_ATTACKS: Registry = Registry("prompt attack")


@dataclass(frozen=True)
class PromptAttack:
    """An entry: ``run(arg, prompts, format, seed)`` -> the prompts the model sees; ``check(arg,
    where)`` refuses a bad argument when the config is validated, before any model is loaded."""
    run: Callable[[str | None, list[str], str, int], list[str]]
    check: Callable[[str | None, str], None] | None = None
    identity: Callable[[str | None], str] | None = None  # what the argument stands for (e.g. a trained attacker's key)


def _parse(spec: str) -> tuple[str, str | None, PromptAttack]:
    """``NAME[:ARG]`` -> (name, argument or None, its registry entry)."""
    name, _, arg = spec.partition(":")
    return name, arg or None, PROMPT_ATTACKS.get(name).obj


def prompt_attack_identity(spec: str | None) -> str | None:
    """``spec`` plus what its argument stands for, so results keyed on it (a durability study's eval
    key) change when an attacker directory is retrained in place; ``spec`` itself for attacks
    without an identity."""
    if not is_set(spec):
        return spec
    _, arg, entry = _parse(spec)
    return spec if entry.identity is None else f"{spec}@{entry.identity(arg)}"


def is_set(spec: str | None) -> bool:
    """Whether ``spec`` names a prompt attack (``none``, empty and None do not)."""
    return spec not in (None, "", "none")


@dataclass(frozen=True)
class RewriteSettings:
    """How an attacker samples its rewrites (shared by cross-play and the prompt attack)."""
    tokens: int = 48
    temperature: float = 1.0
    top_p: float = 0.95
    batch_size: int = 20


def apply_prompt_attack(spec: str | None, prompts: list[str], fmt: str, seed: int) -> list[str]:
    """The prompts the model sees under ``spec`` (``none``/None: unchanged)."""
    if not is_set(spec):
        return list(prompts)
    name, arg, entry = _parse(spec)
    out = entry.run(arg, prompts, fmt, seed)
    if len(out) != len(prompts):
        raise RuntimeError(f"prompt attack {name!r} returned {len(out)} prompts for {len(prompts)}")
    return out


def check_prompt_attack(spec: str | None, field: str = "prompt_attack") -> None:
    if not is_set(spec):
        return
    name = spec.partition(":")[0]
    if name not in PROMPT_ATTACKS:
        raise ConfigError(f"field {field!r}: unknown prompt attack {name!r}; known: none, {', '.join(PROMPT_ATTACKS.names())}")
    _, arg, entry = _parse(spec)
    if entry.check is not None:
        entry.check(arg, f"field {field!r}")


def attacker_adapter(spec: str, what: str) -> tuple[Path, dict]:
    """(adapter directory, defense.json) of a self-play output's attacker: ``adapters/attacker``,
    or ``adapters/shared`` for parameter-shared self-play."""
    d = Path(spec or "")
    info_path = d / "defense.json"
    if not spec or not info_path.exists():
        raise ConfigError(f"{what} {spec!r}: not a self-play output directory (no defense.json)")
    info = json.loads(info_path.read_text())
    adapter = d / "adapters" / ("shared" if info.get("shared") else "attacker")
    if not (adapter / "adapter_model.safetensors").exists():
        raise ConfigError(f"{what} {spec!r}: no attacker adapter at {adapter} (method {info.get('method')!r})")
    return adapter, info


def load_attacker(spec: str, what: str = "attacker") -> LoadedModel:
    """A self-play output directory -> its base model with the attacker adapter (on a copy, so the
    process's cached base stays intact)."""
    adapter, info = attacker_adapter(spec, what)
    base = load_model(info["base"]["name"])
    from peft import PeftModel

    model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(adapter)).eval()
    return LoadedModel(name=f"{Path(spec).name}:{adapter.name}", source=str(adapter), model=model,
                       tokenizer=base.tokenizer, fingerprint=f"{base.fingerprint}+{info['key']}")


def sample_rewrites(attacker: LoadedModel, requests: list[str], fmt: str, seed: int,
                    settings: RewriteSettings = RewriteSettings(), description: str = "prompt attack: rewriting"
                    ) -> tuple[list[str], list[str]]:
    """The attacker's sampled rewrites of each request (the self-play game's instruction): the raw
    generated texts (what self-play trains the attacker on) and the cleaned rewrites (what a model is
    asked). One implementation for the game's rollout, cross-play and the prompt attack."""
    from ..defenses.selfplay import ATTACK_TEMPLATE, clean_rewrite
    from ..generation import GenerationConfig, eval_mode, generate

    with eval_mode(attacker.model):
        raw = generate(attacker, [ATTACK_TEMPLATE.format(seed=s) for s in requests], fmt,
                       GenerationConfig(max_new_tokens=settings.tokens, do_sample=True, temperature=settings.temperature,
                                        top_p=settings.top_p, seed=seed, batch_size=settings.batch_size),
                       description=description)
    return raw, [clean_rewrite(t) or "(empty)" for t in raw]


def rewrite(attacker: LoadedModel, requests: list[str], fmt: str, seed: int,
            settings: RewriteSettings = RewriteSettings()) -> list[str]:
    """The attacker's cleaned rewrite of each request."""
    return sample_rewrites(attacker, requests, fmt, seed, settings)[1]


_LOADED: dict[str, LoadedModel] = {}


def _rewriter(arg: str | None, prompts: list[str], fmt: str, seed: int) -> list[str]:
    """Rewrites as the attacker made them in training: its prompt format, rewrite length and sampling
    (from its defense.json), whatever format the evaluated model is asked in."""
    _, info = attacker_adapter(arg, "prompt_attack rewriter:")
    key = f"{arg}:{info['key']}"  # a directory retrained in place is another attacker
    if key not in _LOADED:
        _LOADED.clear()  # one attacker in memory
        _LOADED[key] = load_attacker(arg, "prompt_attack rewriter:")
    c = info.get("config", {})
    d = RewriteSettings()
    settings = RewriteSettings(tokens=c.get("rewrite_tokens", d.tokens), temperature=c.get("temperature", d.temperature),
                               top_p=c.get("top_p", d.top_p))
    return rewrite(_LOADED[key], prompts, c.get("format", fmt), seed, settings)


PROMPT_ATTACKS.register("rewriter", PromptAttack(run=_rewriter, check=lambda arg, where: attacker_adapter(arg, where),
                                                 identity=lambda arg: attacker_adapter(arg, "prompt_attack rewriter:")[1]["key"]),
                        help="rewriter:DIR: a self-play run's trained attacker rewrites each request")
