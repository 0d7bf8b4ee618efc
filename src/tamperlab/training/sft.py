"""Supervised fine-tuning, LoRA or full, on the HF ``Trainer`` (what real attackers use).

The trainer reads a pre-ordered example list sequentially (``ordered_examples``), so the data order
is a function of the seed alone; evaluation at chosen steps happens in a callback with the RNG state
saved and restored, so evaluating never changes what is trained."""
from __future__ import annotations

import copy
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from ..models.loading import LoadedModel, weights_fingerprint
from ..utils.config import ConfigError
from ..utils.io import append_jsonl
from ..utils.progress import progress
from .adapters import DEFAULT_TARGETS, wrap_lora
from .data import SFTExample, build_features, collate, fit_pool, ordered_examples
from .engine import DivergedError, non_finite, resolve_precision
from .schedules import SCHEDULERS

# PEFT reads a transformers property that now warns on every call; it is not the user's concern
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class TrainConfig:
    method: str = field(default="lora", metadata={"help": "lora | full (all weights)"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    steps: int | None = field(default=25, metadata={"help": "optimizer steps (overrides epochs)"})
    epochs: float | None = field(default=None, metadata={"help": "passes over the data when steps is unset"})
    batch_size: int = field(default=8, metadata={"help": "examples per forward pass"})
    grad_accum: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    scheduler: str = field(default="constant", metadata={
        "help": "constant | constant-warmup | linear | cosine-warmup"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps (warmup schedulers)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scale = alpha / rank)"})
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS),
                                    metadata={"help": "module names LoRA adapts"})
    max_length: int = field(default=256, metadata={"help": "tokens per example (completion is cut)"})
    format: str = field(default="chat", metadata={"help": "prompt format the data is written in"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16 where the GPU supports it) | no | bf16 | fp16"})
    seed: int = field(default=0, metadata={"help": "seed: data order, LoRA init, dropout"})

    def validate(self) -> None:
        from ..prompts import list_formats

        if isinstance(self.lora_targets, str):
            self.lora_targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
        if self.method not in ("lora", "full"):
            raise ConfigError(f"field 'method': must be lora or full, got {self.method!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"field 'scheduler': unknown {self.scheduler!r}; known: {', '.join(SCHEDULERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"field 'lr': must be a positive number, got {self.lr}")
        if self.steps is None and self.epochs is None:
            raise ConfigError("fields 'steps'/'epochs': set one of them")
        for name in ("batch_size", "grad_accum", "lora_rank", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"field 'steps': must be >= 1, got {self.steps}")
        if self.warmup_steps < 0:
            raise ConfigError(f"field 'warmup_steps': must be >= 0, got {self.warmup_steps}")
        if self.warmup_steps and not SCHEDULERS[self.scheduler][1]:
            raise ConfigError(f"field 'warmup_steps': scheduler {self.scheduler!r} has no warmup; "
                              "use constant-warmup or cosine-warmup")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"field 'mixed_precision': auto | no | bf16 | fp16, got {self.mixed_precision!r}")
        if self.format not in list_formats():
            raise ConfigError(f"field 'format': unknown prompt format {self.format!r}")

    def total_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * n_examples / (self.batch_size * self.grad_accum)))


def _precision(cfg: TrainConfig) -> dict:
    mp = resolve_precision(cfg.mixed_precision)
    return {"bf16": mp == "bf16", "fp16": mp == "fp16"}


def train_sft(lm: LoadedModel, pool: list[SFTExample], cfg: TrainConfig, *,
              checkpoint_steps: list[int] | tuple = (),
              on_checkpoint: Callable[[int, LoadedModel], Any] | None = None,
              log_path: str | Path | None = None, description: str = "training") -> Any:
    """Fine-tune a copy of ``lm.model`` on ``pool`` and return the trained model (a PEFT model for
    LoRA). ``on_checkpoint(step, view)`` is called at every step in ``checkpoint_steps`` (step 0 =
    the untouched model, so its generations are shared by every run through the cache)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_utils import set_seed

    cfg.validate()
    steps = cfg.total_steps(len(pool))
    bad = [s for s in checkpoint_steps if not 0 <= s <= steps]
    if bad:
        raise ConfigError(f"field 'checkpoint_steps': {bad} outside 0..{steps}")
    want = sorted(set(checkpoint_steps))
    if on_checkpoint and 0 in want:
        on_checkpoint(0, lm)

    set_seed(cfg.seed)
    model = copy.deepcopy(lm.model)
    model.train()
    if cfg.method == "lora":
        model = wrap_lora(model, cfg)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    pool, dropped = fit_pool(lm.tokenizer, pool, cfg.format, cfg.max_length)
    if dropped:
        warnings.warn(f"{len(dropped)} training example(s) have a prompt of max_length={cfg.max_length} tokens "
                      f"or more and were left out (e.g. {dropped[0]!r})", stacklevel=2)
    examples = ordered_examples(pool, steps * cfg.batch_size * cfg.grad_accum, cfg.seed)
    feats = build_features(lm.tokenizer, examples, cfg.format, cfg.max_length)

    def view(step: int) -> LoadedModel:
        return LoadedModel(name=lm.name, source=lm.source, model=model, tokenizer=lm.tokenizer,
                           fingerprint=weights_fingerprint(model), extra={"step": step})

    with progress(description, steps) as advance:
        class _Hooks(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                logs = logs or {}
                bad = non_finite({k: float(v) for k, v in logs.items() if k == "loss"})
                if bad:
                    raise DivergedError(f"loss is {bad['loss']} at step {state.global_step}; lower the learning rate")
                if log_path and "loss" in logs:
                    append_jsonl(log_path, [{"step": state.global_step, **logs}])

            def on_step_end(self, args, state, control, **kw):
                advance(1)
                if on_checkpoint and state.global_step in want and state.global_step > 0:
                    was_training = model.training
                    model.eval()
                    with torch.random.fork_rng():
                        on_checkpoint(state.global_step, view(state.global_step))
                    model.train(was_training)

        sched, _ = SCHEDULERS[cfg.scheduler]
        with tempfile.TemporaryDirectory(prefix="tamperlab-trainer-") as tmp:
            args = TrainingArguments(
                output_dir=tmp, max_steps=steps, per_device_train_batch_size=cfg.batch_size,
                gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr,
                lr_scheduler_type=sched, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
                max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, data_seed=cfg.seed,
                train_sampling_strategy="sequential", logging_steps=1, logging_nan_inf_filter=False, save_strategy="no",
                report_to=[], disable_tqdm=True, remove_unused_columns=False,
                dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
                **_precision(cfg))
            with warnings.catch_warnings():  # transformers' own deprecation notices, not the user's
                warnings.filterwarnings("ignore", category=FutureWarning)
                warnings.filterwarnings("ignore", message=".*pin_memory.*")
                cls = _weighted_loss_trainer() if "weights" in feats[0] else Trainer
                trainer = cls(model=model, args=args, train_dataset=feats,
                                  data_collator=partial(collate, pad_id=lm.pad_id),
                                  callbacks=[_Hooks()])
                trainer.remove_callback(PrinterCallback)  # our progress bar and JSONL log replace it
                trainer.train()
    model.eval()
    return model


def _weighted_loss_trainer():
    """Defined on use: transformers' Trainer is imported lazily, as in train_sft."""
    from transformers import Trainer

    from .losses import weighted_nll

    class WeightedLossTrainer(Trainer):
        """Mean token NLL with per-token weights (``SFTExample.weights``): sum(w * nll) / sum(w)
        over a micro-batch. The Trainer must divide it by the accumulation steps, as for its own
        loss: transformers >= 5 reads ``loss_is_scaled_for_ga``; older versions divide only when
        ``model_accepts_loss_kwargs`` is false, which ``Trainer.__init__`` sets from the model, so it
        is reset after."""
        loss_is_scaled_for_ga = False

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            w = inputs.pop("loss_weights")  # (B, T)
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss = weighted_nll(out.logits, inputs["labels"], w)
            return (loss, out) if return_outputs else loss

    return WeightedLossTrainer


def save_model_dir(model, tokenizer, out_dir: str | Path, merge: bool = True) -> Path:
    """Save as safetensors: a LoRA model either merged into full weights (loads like any model) or
    as the adapter alone (small; load on top of its base)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_peft = hasattr(model, "peft_config")
    if is_peft and merge:
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out, safe_serialization=True) if not is_peft or merge else model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
