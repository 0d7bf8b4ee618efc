"""Vaccine (Huang et al. 2024, "Vaccine: Perturbation-aware Alignment"): align on the SFT mix while
the hidden states are perturbed in the direction that hurts alignment most, so the aligned model
stays aligned when later fine-tuning drifts its embeddings ("harmful embedding drift").

Each step: (1) forward the mix batch, take the gradient g_l of the alignment loss w.r.t. every
decoder layer's output; (2) forward again with ε_l = ρ · g_l / ‖g_l‖ added to layer l's output;
(3) update the weights with the gradient of that perturbed loss. The layers are found generically
(``models.hooks.decoder_layers``), and step (1) never touches the weights or their gradients."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models.hooks import capture_layer_outputs, decoder_layers, perturb_layer_outputs
from ..training.supervised import nll_terms
from ..utils.config import ConfigError
from .base import DEFENSES
from .session import DefenseSession, Objective, session_defense
from .sft import SFTDefenseConfig


@dataclass
class VaccineConfig(SFTDefenseConfig):
    rho: float = field(default=2.0, metadata={
        "help": "ρ: norm of each layer's perturbation of its output hidden states (paper: 2)"})

    def validate(self) -> None:
        super().validate()
        if self.rho < 0:
            raise ConfigError(f"field 'rho': must be >= 0, got {self.rho}")


def layer_perturbations(model, layers, batch: dict, rho: float) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """(unperturbed loss, ε per layer): ε_l = ρ · g_l / ‖g_l‖ with g_l the gradient of the batch's
    mean token NLL w.r.t. layer l's output (None where the output does not reach the loss). Only
    ``torch.autograd.grad`` w.r.t. the outputs: no weight's ``.grad`` is written."""
    with capture_layer_outputs(model, layers) as outs:
        loss, _ = nll_terms(model, batch)
    wanted = [o for o in outs if o.requires_grad]
    grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True)) if wanted else iter(())
    deltas: list[torch.Tensor | None] = []
    for o in outs:
        g = next(grads) if o.requires_grad else None
        norm = g.norm() if g is not None else None
        deltas.append(None if g is None or not norm > 0 else (rho * g / norm).detach())
    return loss.detach(), deltas


class VaccineObjective(Objective):
    def setup(self, s: DefenseSession) -> None:
        self.layers = decoder_layers(s.model)

    def loss(self, s: DefenseSession, mb: dict):
        batch = mb["mix"]
        clean, deltas = layer_perturbations(s.model, self.layers, batch, s.cfg.rho)
        with perturb_layer_outputs(s.model, self.layers, deltas):
            loss, _ = nll_terms(s.model, batch)
        return loss, {"unperturbed": float(clean), "perturbation_gain": float(loss.detach() - clean)}

    def describe(self, s: DefenseSession) -> str:
        return (f"Vaccine: the mix's NLL under a worst-case perturbation of norm ρ={s.cfg.rho} on each of "
                f"{len(self.layers)} decoder layers' outputs.")


defend_vaccine = session_defense(VaccineObjective, "Vaccine")


DEFENSES.register("vaccine", defend_vaccine, config_cls=VaccineConfig,
                  help="Vaccine: alignment under worst-case perturbations of every layer's hidden states")
