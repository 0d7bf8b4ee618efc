"""Refusal SFT: the baseline defense (harmful -> refusal, plus utility data so the model keeps
answering benign requests). It is also the aligner the durability study attacks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..models.loading import LoadedModel
from ..training.sft import TrainConfig, save_model_dir, train_sft
from ..utils.config import ConfigError
from .base import DEFENSES
from .data import mix, refusal_examples, utility_examples


@dataclass
class SFTDefenseConfig(TrainConfig):
    method: str = field(default="lora", metadata={"help": "lora | full"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    steps: int | None = field(default=60, metadata={"help": "optimizer steps"})
    scheduler: str = field(default="cosine-warmup", metadata={"help": "learning-rate schedule"})
    warmup_steps: int = field(default=5, metadata={"help": "warmup steps"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha"})
    n_safety: int | None = field(default=None, metadata={"help": "refusal examples used (default all)"})
    utility_fraction: float = field(default=0.5, metadata={"help": "share of utility (GSM8K) examples in the mix"})

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.utility_fraction < 1:
            raise ConfigError(f"field 'utility_fraction': must be in [0, 1), got {self.utility_fraction}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.__dataclass_fields__})


def defend_sft(lm: LoadedModel, cfg: SFTDefenseConfig, out: Path) -> dict:
    pool = mix(refusal_examples(), utility_examples(), cfg.utility_fraction, cfg.n_safety)
    model = train_sft(lm, pool, cfg.train_config(), log_path=out / "train_log.jsonl",
                      description="defend: refusal SFT")
    save_model_dir(model, lm.tokenizer, out, merge=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(out / "adapter")
    return {"examples": len(pool), "data": {"safety": "harmful/defense-train (data/vendor/refusals)",
                                            "utility": "gsm8k/defense-train"}}


DEFENSES.register("sft", defend_sft, config_cls=SFTDefenseConfig,
                  help="refusal SFT (harmful -> refusal, GSM8K utility mix): the baseline")
