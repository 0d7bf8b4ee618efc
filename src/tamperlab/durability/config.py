"""The durability study config: models × attack grid × seeds × checkpoint steps × formats.

Everything is validated before any work starts, and every error names the key (and the file)."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from ..attacks import ATTACKS, DEFAULT_KIND
from ..attacks.registry import attack_key, attack_label
from ..evaluation.config import EvalConfig
from ..utils.config import ConfigError, from_dict, merge, read_yaml_mapping
from ..utils.hashing import stable_hash


@dataclass
class ModelSpec:
    name: str = field(metadata={"help": "label in tables and figures"})
    model: str = field(metadata={"help": "preset, local directory or hub id"})
    defense: dict | None = field(default=None, metadata={
        "help": "train this defense on `model` first: {method: sft, ...its config}"})
    attack: bool = field(default=True, metadata={
        "help": "false: a reference, evaluated before any attack (step 0) only"})

    def defense_config(self, defense_seed: int = 0) -> dict | None:
        """The defense's settings for one defense seed (its config's ``seed``)."""
        return None if self.defense is None else {**self.defense, "seed": defense_seed}

    def key(self, defense_seed: int = 0) -> str:
        """The model's identity. Seed 0 is every defense config's default seed, so it is left out of
        the hash: a study that names no defense seeds keeps the keys (and the resume state) it had."""
        d = self.defense if defense_seed == 0 or self.defense is None else self.defense_config(defense_seed)
        return stable_hash({"model": self.model, "defense": d})[:12]


@dataclass
class Cell:
    """One point of the attack grid (seed not included: seeds repeat a cell): an ATTACKS entry
    (``kind``) and its config."""
    attack: Any
    label: str
    kind: str = DEFAULT_KIND

    @cached_property
    def key(self) -> str:
        """The attack's identity (the fine-tuning attack hashes its data too, so computed once per
        cell: plan uses it for every seed)."""
        return attack_key(self.kind, self.attack)


@dataclass
class DurabilityConfig:
    name: str = field(default="study", metadata={"help": "study name (report title)"})
    models: list = field(default_factory=list, metadata={"help": "list of {name, model, defense?, attack?}"})
    attack: dict = field(default_factory=dict, metadata={
        "help": "settings shared by every cell: kind (an attack of `tamperlab attacks`, default finetune) and "
                "that attack's config keys"})
    grid: dict = field(default_factory=dict, metadata={
        "help": "key -> list of values, crossed; a list item that is a mapping sets several keys at once"})
    cells: list = field(default_factory=list, metadata={"help": "extra cells: overrides of `attack`"})
    seeds: Any = field(default=5, metadata={"help": "attack seeds: a number (0..n-1) or an explicit list"})
    defense_seeds: Any = field(default=1, metadata={
        "help": "defense seeds: every defended model is trained once per seed (a number 0..n-1 or a list; it is "
                "the defense config's `seed`); rows carry both seeds and every spread covers both"})
    steps: list = field(default_factory=lambda: [0, 10, 25], metadata={"help": "checkpoint steps to evaluate"})
    formats: list = field(default_factory=lambda: ["chat"], metadata={"help": "prompt formats for evaluation"})
    eval: dict = field(default_factory=dict, metadata={"help": "evaluation settings (EvalConfig keys)"})
    baseline_eval: dict = field(default_factory=dict, metadata={
        "help": "extra evaluation of every model once, before any attack (e.g. utility: mmlu, gsm8k, overrefusal)"})
    metric: str = field(default="harm/asr", metadata={"help": "headline metric suite/metric for verdicts"})
    threshold: float = field(default=0.2, metadata={
        "help": "a safeguard holds if the headline metric stays on the good side of this for every cell, step and seed"})

    # ---- derived, validated views ------------------------------------------------------------
    def validate(self) -> None:
        if not isinstance(self.models, list) or not self.models:
            raise ConfigError("field 'models': list at least one model")
        specs = []
        for i, m in enumerate(self.models):
            if isinstance(m, ModelSpec):
                specs.append(m)
                continue
            if not isinstance(m, dict):
                raise ConfigError(f"field 'models[{i}]': expected a mapping with name and model")
            missing = [k for k in ("name", "model") if k not in m]
            if missing:
                raise ConfigError(f"field 'models[{i}]': missing {', '.join(missing)}")
            specs.append(from_dict(ModelSpec, m, source=f"models[{i}]"))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"field 'models': duplicate names {sorted({n for n in names if names.count(n) > 1})}")
        for i, s in enumerate(specs):
            _check_model_ref(s.model, f"models[{i}].model")
            if s.defense is not None:
                from ..defenses import DEFENSES

                if not isinstance(s.defense, dict) or "method" not in s.defense:
                    raise ConfigError(f"field 'models[{s.name}].defense': needs a 'method' ({', '.join(DEFENSES.names())})")
                d = dict(s.defense)
                entry = DEFENSES.get(d.pop("method"))
                from_dict(entry.config_cls, d, source=f"models[{s.name}].defense")
        self.models = specs
        for key in ("seeds", "defense_seeds"):
            _seed_list(getattr(self, key), key)  # raises on a bad value
        for s in specs:
            if s.defense is not None and "seed" in s.defense:
                raise ConfigError(f"field 'models[{s.name}].defense.seed': set defense seeds with the top-level "
                                  "'defense_seeds' key")
        if not self.steps or not all(isinstance(s, int) and s >= 0 for s in self.steps):
            raise ConfigError(f"field 'steps': a list of non-negative integers, got {self.steps!r}")
        for f in self.formats:
            self.eval_config(f)  # raises on a bad format or eval key
            if self.baseline_eval:
                self.eval_config(f, baseline=True)
        if "/" not in self.metric:
            raise ConfigError(f"field 'metric': write suite/metric (e.g. harm/asr), got {self.metric!r}")
        if self.metric.split("/")[0] not in self.eval_config(self.formats[0]).suite:
            raise ConfigError(f"field 'metric': suite {self.metric.split('/')[0]!r} is not in eval.suite")
        self.cells_expanded()  # raises on a bad grid

    def seed_list(self) -> list[int]:
        """The attack seeds."""
        return _seed_list(self.seeds, "seeds")

    def defense_seed_list(self) -> list[int]:
        return _seed_list(self.defense_seeds, "defense_seeds")

    def trained_models(self) -> list[tuple[ModelSpec, int | None]]:
        """Every model the study evaluates: (spec, defense seed), one per defense seed for a defended
        model, and (spec, None) for a model without a defense."""
        return [(s, ds) for s in self.models for ds in (self.defense_seed_list() if s.defense is not None else [None])]

    def eval_config(self, fmt: str, baseline: bool = False) -> EvalConfig:
        key = "baseline_eval" if baseline else "eval"
        data = self.baseline_eval if baseline else self.eval
        if not isinstance(data, dict):
            raise ConfigError(f"field {key!r}: expected a mapping of evaluation settings")
        if "format" in data:
            raise ConfigError(f"field '{key}.format': list formats in the top-level 'formats' key")
        return from_dict(EvalConfig, {**data, "format": fmt}, source=key)

    def eval_key(self, baseline: bool = False) -> str:
        d = asdict(self.eval_config(self.formats[0], baseline))
        d.pop("format")
        d.pop("seed")
        d.pop("use_cache")
        from ..attacks.prompt import is_set, prompt_attack_identity

        if not is_set(d.get("prompt_attack")):  # the default leaves the key (and the resume state) as it was
            d.pop("prompt_attack", None)
        else:  # a rewriter retrained in place is another attack
            d["prompt_attack"] = prompt_attack_identity(d["prompt_attack"])
        return stable_hash(d)[:12]

    def cells_expanded(self) -> list[Cell]:
        if not isinstance(self.grid, dict):
            raise ConfigError("field 'grid': expected a mapping key -> list of values")
        base = dict(self.attack)
        for k in ("seed", "checkpoint_steps"):
            if k in base:
                raise ConfigError(f"field 'attack.{k}': set it with the top-level 'seeds'/'steps' keys")
        axes = []
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"field 'grid.{key}': expected a non-empty list")
            axes.append([v if isinstance(v, dict) else {key: v} for v in values])
        combos = [{k: v for over in c for k, v in over.items()} for c in itertools.product(*axes)] if axes else [{}]
        extras = []
        for i, c in enumerate(self.cells):
            if not isinstance(c, dict):
                raise ConfigError(f"field 'cells[{i}]': expected a mapping of attack settings")
            extras.append(c)
        out, seen = [], set()
        for j, over in enumerate(combos + extras):
            where = f"grid cell {j}" if j < len(combos) else f"cells[{j - len(combos)}]"
            data = {**base, **over, "checkpoint_steps": list(self.steps)}
            kind = data.pop("kind", DEFAULT_KIND)
            if kind not in ATTACKS:
                raise ConfigError(f"field 'attack.kind' ({where}): unknown attack {kind!r}; "
                                  f"known: {', '.join(ATTACKS.names())}")
            cls = ATTACKS.get(kind).config_cls
            has_steps = "steps" in {f.name for f in fields(cls)}
            if has_steps:
                data.setdefault("steps", max(self.steps))
            try:
                atk = from_dict(cls, data, source=where)
            except ConfigError as e:
                raise ConfigError(f"{e} ({kind} attack settings are {cls.__name__} keys)") from None
            if has_steps and atk.steps != max(self.steps):
                raise ConfigError(f"{where}: attack steps={atk.steps} but the last checkpoint step is {max(self.steps)}")
            cell = Cell(atk, label=attack_label(kind, atk), kind=kind)
            if cell.key not in seen:
                seen.add(cell.key)
                out.append(cell)
        return out


def _seed_list(value, key: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"field {key!r}: must be >= 1, got {value}")
        return list(range(value))
    if not (isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        raise ConfigError(f"field {key!r}: a count or a list of integers, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"field {key!r}: seeds repeat: {value!r}")
    return list(value)


def _check_model_ref(ref: str, where: str) -> None:
    """A model that is not a preset must be an existing model directory or a hub id (checked without
    loading or downloading anything)."""
    from ..models import MODELS
    from ..models.loading import resolve_model_dir

    if ref not in MODELS:
        try:
            resolve_model_dir(ref)
        except FileNotFoundError as e:
            raise ConfigError(f"field {where!r}: {e}") from None


def meta_model(ref: str):
    """The architecture of model ``ref`` on the meta device (no weights), or None where it cannot be
    read without loading (an adapter-only directory, an unreachable hub id)."""
    from pathlib import Path as _P

    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..models.loading import resolve_model_dir

    path = resolve_model_dir(ref)
    if _P(path).exists() and not (_P(path) / "config.json").exists():
        return None
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError:
        return None
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config)


def check_attacks_against_models(cfg: DurabilityConfig) -> None:
    """Every cell's settings against every model it attacks (LoRA targets, ...), before any work:
    each ATTACKS entry's ``check_model`` on the model's meta-device architecture."""
    cells = [c for c in cfg.cells_expanded() if ATTACKS.get(c.kind).obj.check_model is not None]
    models: dict[str, Any] = {}
    for spec in (s for s in cfg.models if s.attack and cells):
        if spec.model not in models:
            models[spec.model] = meta_model(spec.model)
        if models[spec.model] is None:
            continue
        for cell in cells:
            try:
                ATTACKS.get(cell.kind).obj.check_model(cell.attack, models[spec.model])
            except ConfigError as e:
                raise ConfigError(f"{e} (cell {cell.label!r} on model {spec.name!r})") from None


def load_study(path: str | Path, overrides: dict | None = None) -> DurabilityConfig:
    """The study of a YAML file, with ``overrides`` (``--set`` keys; mappings merge key by key)."""
    p = Path(path)
    data = merge(read_yaml_mapping(p), overrides or {})
    try:
        return from_dict(DurabilityConfig, data, source=str(p) + " + --set" * bool(overrides))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if str(p) in msg else f"{p}: {msg}") from None
