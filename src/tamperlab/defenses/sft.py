"""Refusal SFT: the baseline defense (harmful -> refusal, plus utility data so the model keeps
answering benign requests). It is also the aligner the durability study attacks."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..models.loading import LoadedModel
from ..training.adapters import save_defended, trainable_model
from ..training.engine import Engine
from ..training.sft import TrainConfig
from ..training.supervised import copy_log, train_supervised
from ..utils.config import ConfigError
from .base import DEFENSES
from .card import write_card
from .checks import BudgetFields, DevChecker, checked_run
from .data import DataFields, defense_data, mix


@dataclass
class SFTDefenseConfig(DataFields, BudgetFields, TrainConfig):
    method: str = field(default="lora", metadata={"help": "lora | full"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    steps: int | None = field(default=60, metadata={"help": "optimizer steps"})
    checkpoint_every: int = field(default=20, metadata={"help": "steps between resumable checkpoints (0: none)"})
    scheduler: str = field(default="cosine-warmup", metadata={"help": "learning-rate schedule"})
    warmup_steps: int = field(default=5, metadata={"help": "warmup steps"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha"})
    n_safety: int | None = field(default=None, metadata={"help": "refusal examples used (default all)"})
    utility_fraction: float = field(default=0.5, metadata={"help": "share of helpful (utility) examples in the mix"})

    def validate(self) -> None:
        super().validate()
        self.validate_budget(self.steps or 1)
        self.validate_data()
        if self.checkpoint_every < 0:
            raise ConfigError(f"field 'checkpoint_every': must be >= 0, got {self.checkpoint_every}")
        if not 0 <= self.utility_fraction < 1:
            raise ConfigError(f"field 'utility_fraction': must be in [0, 1), got {self.utility_fraction}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.__dataclass_fields__})


def defend_sft(lm: LoadedModel, cfg: SFTDefenseConfig, out: Path) -> dict:
    """On the engine, LoRA on the shared base (no model copy), resumable from ``out/work``."""
    from transformers.trainer_utils import set_seed

    data = defense_data(cfg.data_recipe, cfg.utility_answers, lm)
    pool = mix(data.safety, data.utility, cfg.utility_fraction, cfg.n_safety)
    tcfg = cfg.train_config()
    set_seed(cfg.seed)
    engine = Engine(out / "work", mixed_precision=cfg.mixed_precision, grad_accum=cfg.grad_accum,
                    checkpoint_every=cfg.checkpoint_every)
    choice: dict = {}
    with trainable_model(lm.model, tcfg) as model:
        checker = DevChecker(lm, cfg, out / "work", cfg.format) if cfg.check_every else None

        def run(total, step_fn, description):
            choice.update(checked_run(engine, checker, model, cfg.check_every, total, step_fn, description) or {})

        last = train_supervised(engine, model, lm, pool, tcfg, description="defend: refusal SFT", run=run)
        save_defended(engine.unwrap(model), lm.tokenizer, out)
    copy_log(engine, out)
    write_card(out, "Refusal-SFT-defended model", (
        f"{'LoRA r' + str(cfg.lora_rank) + ' on a frozen base' if cfg.method == 'lora' else 'Full fine-tune'}, "
        f"{len(pool)} examples ({cfg.utility_fraction:.0%} utility)."), cfg, last, choice or None)
    for d in ("checkpoint", "checks"):  # finished: resume state and check snapshots not needed
        shutil.rmtree(out / "work" / d, ignore_errors=True)
    return {"examples": len(pool), "final": {k: v for k, v in last.items() if k != "examples"}, **choice,
            "data": data.provenance}


DEFENSES.register("sft", defend_sft, config_cls=SFTDefenseConfig,
                  help="refusal SFT (harmful -> refusal, GSM8K utility mix): the baseline")
