"""Refusal SFT: the baseline defense (harmful -> refusal, plus utility data so the model keeps
answering benign requests). It is also the aligner the durability study attacks."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..training.data import SFTExample, ordered_items
from ..training.losses import preference_loss, sequence_logps
from ..training.sft import TrainConfig
from ..training.supervised import nll_terms
from ..utils.config import ConfigError
from .base import DEFENSES, KEY_OMITS_DEFAULT
from .checks import BudgetFields
from .data import DataFields, contrast_pairs
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
    contrast_weight: float = field(default=0.0, metadata={
        "help": "weight of a per-token preference term (contrast_loss) for the helpful answer over a refusal on "
                "contrast/defense-train prompts (safe prompts in XSTest's categories; needs data_recipe v3); "
                "0: plain refusal SFT",
        KEY_OMITS_DEFAULT: True})
    contrast_loss: str = field(default="dpo", metadata={
        "help": "dpo | ipo: the contrast term's preference loss (ipo stops at a margin of 1/(2 beta) nats per token "
                "instead of pushing the refusal down without bound)", KEY_OMITS_DEFAULT: True})
    contrast_beta: float = field(default=2.0, metadata={"help": "beta of the contrast term (per-token log-probs)",
                                                        KEY_OMITS_DEFAULT: True})
    contrast_batch_size: int = field(default=4, metadata={"help": "contrast pairs per micro-batch",
                                                          KEY_OMITS_DEFAULT: True})

    def validate(self) -> None:
        super().validate()
        self.validate_budget(self.steps or 1)
        self.validate_data()
        if self.checkpoint_every < 0:
            raise ConfigError(f"field 'checkpoint_every': must be >= 0, got {self.checkpoint_every}")
        if not 0 <= self.utility_fraction < 1:
            raise ConfigError(f"field 'utility_fraction': must be in [0, 1), got {self.utility_fraction}")
        if self.contrast_weight < 0:
            raise ConfigError(f"field 'contrast_weight': must be >= 0, got {self.contrast_weight}")
        if self.contrast_weight and self.data_recipe != "v3":
            raise ConfigError(f"field 'contrast_weight': the contrast term trains on v3's contrast prompts; "
                              f"set data_recipe: v3 (got {self.data_recipe!r})")
        if self.contrast_loss not in ("dpo", "ipo"):
            raise ConfigError(f"field 'contrast_loss': dpo | ipo, got {self.contrast_loss!r}")
        if self.contrast_beta <= 0 or self.contrast_batch_size < 1:
            raise ConfigError("fields 'contrast_beta'/'contrast_batch_size': must be > 0 / >= 1, got "
                              f"{self.contrast_beta}/{self.contrast_batch_size}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.__dataclass_fields__})


class NLLObjective(Objective):
    """Refusal SFT: the mean token NLL of the mix (refusals + helpful answers). With
    ``contrast_weight`` > 0 it adds a per-token DPO (or IPO) term on contrast pairs (helpful answer over a
    refusal, against the original model): the NLL on helpful answers raises one answer, while
    refusal generalising to "sounds unsafe" needs the refusal itself made less likely there. Both
    terms are per-token means, so the weight sets their ratio."""

    def setup(self, s: DefenseSession) -> None:
        self.pairs: list[tuple[SFTExample, SFTExample]] = []
        if s.cfg.contrast_weight:
            self.pairs = contrast_pairs(s.cfg.utility_answers, s.lm)
            n = s.steps * s.cfg.contrast_batch_size * s.cfg.grad_accum
            self.order = ordered_items(self.pairs, n, s.cfg.seed + 1)

    def step(self, s: DefenseSession, i: int) -> dict:
        mbs = s.micro_batches(i)
        if self.pairs:
            b = s.cfg.contrast_batch_size
            for j, mb in enumerate(mbs):
                k = (i * s.cfg.grad_accum + j) * b
                mb["contrast"] = self.order[k:k + b]
        return s.engine.optimize(s.player, mbs, lambda mb: self.loss(s, mb), s.weight)

    def loss(self, s: DefenseSession, mb: dict):
        loss, numbers = nll_terms(s.model, mb["mix"])
        if "contrast" not in mb:
            return loss, numbers
        pref = contrast_term(s, mb["contrast"])
        return loss + s.cfg.contrast_weight * pref, {"nll": float(loss.detach()), "contrast": float(pref.detach())}

    def describe(self, s: DefenseSession) -> str:
        if not self.pairs:
            return ""
        return (f"Contrast term: per-token {s.cfg.contrast_loss.upper()} (weight {s.cfg.contrast_weight:g}, "
                f"beta {s.cfg.contrast_beta:g}) preferring the helpful answer over a refusal on {len(self.pairs)} "
                "contrast/defense-train prompts.")


def contrast_term(s: DefenseSession, chunk: list[tuple[SFTExample, SFTExample]]):
    """DPO (or IPO) on per-token mean log-probs: each safe prompt's helpful answer over the refusal."""
    good, bad = s.features([c[0] for c in chunk]), s.features([c[1] for c in chunk])
    return preference_loss(sequence_logps(s.model, good, average=True), sequence_logps(s.model, bad, average=True),
                           s.reference_logps(good, [("contrast", c[0].id, 0) for c in chunk]),
                           s.reference_logps(bad, [("contrast", c[1].id, 1) for c in chunk]),
                           s.cfg.contrast_beta, s.cfg.contrast_loss)


defend_sft = session_defense(NLLObjective, "Refusal-SFT")


DEFENSES.register("sft", defend_sft, config_cls=SFTDefenseConfig,
                  help="refusal SFT (harmful -> refusal, mixed with helpful answers): the baseline")
