"""Refusal SFT: the baseline defense (harmful -> refusal, plus utility data so the model keeps
answering benign requests). It is also the aligner the durability study attacks."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..training.sft import TrainConfig
from ..training.supervised import nll_terms
from ..utils.config import ConfigError
from .base import DEFENSES
from .checks import BudgetFields
from .data import DataFields
from .session import DefenseSession, Objective, session_defense


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


class NLLObjective(Objective):
    """Refusal SFT: the mean token NLL of the mix (refusals + helpful answers)."""

    def loss(self, s: DefenseSession, mb: dict):
        return nll_terms(s.model, mb["mix"])


defend_sft = session_defense(NLLObjective, "Refusal-SFT")


DEFENSES.register("sft", defend_sft, config_cls=SFTDefenseConfig,
                  help="refusal SFT (harmful -> refusal, mixed with helpful answers): the baseline")
