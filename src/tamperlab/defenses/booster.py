"""Booster (Huang et al. 2025, "Booster: Tackling Harmful Fine-tuning ... via Attenuating Harmful
Perturbation"): align on the SFT mix while making one normalised step of harmful fine-tuning
reduce the harmful loss as little as possible.

    L = L_align(w) + λ · (L_harm(w) − L_harm(w − α · ∇L_harm(w) / ‖∇L_harm(w)‖))

with the paper's first-order gradient ∇L_align(w) + λ (∇L_harm(w) − ∇L_harm(w')) (the step's
direction treated as a constant). L_harm is the mean token NLL of harmful answers (this step's
harmful pairs), L_align refusal SFT's loss on the mix."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..training.losses import nll
from ..training.supervised import nll_terms
from ..utils.config import ConfigError
from .base import DEFENSES
from .session import DefenseSession, Objective, PairFields, session_defense
from .sft import SFTDefenseConfig


@dataclass
class BoosterConfig(PairFields, SFTDefenseConfig):
    lam: float = field(default=5.0, metadata={"help": "λ: weight of the harmful-perturbation term (paper: 5)"})
    booster_alpha: float = field(default=0.1, metadata={
        "help": "α: length of the simulated harmful step in weight space (paper: 0.1)"})

    def validate(self) -> None:
        super().validate()
        self.validate_pairs()
        for name in ("lam", "booster_alpha"):
            if getattr(self, name) < 0:
                raise ConfigError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")


def booster_term(harm_loss: Callable[[], torch.Tensor], params: list[torch.nn.Parameter],
                 alpha: float) -> tuple[torch.Tensor, dict]:
    """L_harm(w) − L_harm(w') with w' = w − α g/‖g‖, g = ∇L_harm(w), as a tensor whose value is
    that difference and whose gradient w.r.t. ``params`` is ∇L_harm(w) − ∇L_harm(w') (first
    order). The weights are moved to w' and restored bit-exactly; neither loss's graph is kept
    (the caller's own loss is built after, on the restored weights). With g = 0 the term and its
    gradient are exactly 0."""
    h = harm_loss()
    g = [torch.zeros_like(p) if x is None else x
         for p, x in zip(params, torch.autograd.grad(h, params, allow_unused=True))]
    norm = torch.sqrt(sum((x.float() ** 2).sum() for x in g))
    if not norm > 0:
        zero = sum((p * 0).sum() for p in params)
        return zero, {"harm": float(h.detach()), "harm_after_step": float(h.detach()), "harm_grad_norm": 0.0}
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, x in zip(params, g):
            p.sub_(alpha * x / norm.to(x.dtype))
    try:
        h2 = harm_loss()
        g2 = [torch.zeros_like(p) if x is None else x
              for p, x in zip(params, torch.autograd.grad(h2, params, allow_unused=True))]
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    diff = [a - b for a, b in zip(g, g2)]
    lin = sum((d * p).sum() for d, p in zip(diff, params))  # gradient: g - g2
    term = (h.detach() - h2.detach()) + lin - lin.detach()
    return term, {"harm": float(h.detach()), "harm_after_step": float(h2.detach()), "harm_grad_norm": float(norm)}


class BoosterObjective(Objective):
    uses_pairs = True

    def loss(self, s: DefenseSession, mb: dict):
        cfg = s.cfg
        term, nums = booster_term(lambda: nll(s.model, mb["harmful"]), s.params, cfg.booster_alpha)
        align, _ = nll_terms(s.model, mb["mix"])  # after the weights are restored
        return align + cfg.lam * term, {"align": float(align.detach()), "booster": float(term.detach()), **nums}

    def describe(self, s: DefenseSession) -> str:
        return (f"Booster: the mix's NLL + {s.cfg.lam} · (harmful NLL − harmful NLL after a normalised harmful step "
                f"of length {s.cfg.booster_alpha}).")


defend_booster = session_defense(BoosterObjective, "Booster")


DEFENSES.register("booster", defend_booster, config_cls=BoosterConfig,
                  help="Booster: alignment + attenuation of a simulated harmful fine-tuning step")
