"""RepNoise (Rosati et al. 2024, "Representation Noising"): push the representations of harmful
answers towards Gaussian noise, so that the information a fine-tuning attack would need to recover
harmful behaviour is removed, while the harmless answers are still learnt.

    L = L_harmless + β · mean_l MMD(h_l(harmful answer), N(0, I)) − α · log(1 + L_lens(harmful))

L_harmless is the mean token NLL of the SFT mix and of the refusals of this step's harmful pairs
(same prompts as the harmful answers); MMD compares each decoder layer's hidden states at the
harmful answer's tokens with as many standard-normal samples; L_lens is the NLL of the harmful
tokens read through the logit lens (final norm + LM head) at a few evenly spaced layers and at the
output, whose ascent the log bounds."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models.hooks import final_norm
from ..training.data import IGNORE_INDEX
from ..training.losses import mean_nll, mmd_rbf, token_logps
from ..utils.config import ConfigError
from .base import DEFENSES
from .session import DefenseSession, Objective, PairFields, session_defense
from .sft import SFTDefenseConfig


@dataclass
class RepNoiseConfig(PairFields, SFTDefenseConfig):
    alpha: float = field(default=1.0, metadata={"help": "α: weight of the bounded ascent −log(1 + harmful lens NLL)"})
    beta: float = field(default=1e-3, metadata={"help": "β: weight of the per-layer MMD to Gaussian noise (paper: 0.001)"})
    lens_layers: int = field(default=4, metadata={
        "help": "intermediate layers (evenly spaced) whose logit lens joins the output's in the ascent term"})
    mmd_tokens: int = field(default=128, metadata={"help": "harmful-answer tokens per layer in the MMD (evenly subsampled)"})

    def validate(self) -> None:
        super().validate()
        self.validate_pairs()
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")
        for name in ("lens_layers", "mmd_tokens"):
            if getattr(self, name) < 0 or (name == "mmd_tokens" and self.mmd_tokens < 2):
                raise ConfigError(f"field {name!r}: must be >= {2 if name == 'mmd_tokens' else 0}, got {getattr(self, name)}")


def answer_states(hidden: torch.Tensor, labels: torch.Tensor, limit: int) -> torch.Tensor:
    """The hidden states (n, d) at the answer's tokens (label != -100), at most ``limit`` of them,
    evenly spaced (deterministic); hidden (B, T, d), labels (B, T)."""
    h = hidden[labels != IGNORE_INDEX]  # (n, d)
    if h.shape[0] > limit:
        idx = torch.linspace(0, h.shape[0] - 1, limit, device=h.device).round().long()
        h = h[idx]
    return h


class RepNoiseObjective(Objective):
    uses_pairs = True

    def setup(self, s: DefenseSession) -> None:
        self.norm = final_norm(s.model)
        self.head = s.engine.unwrap(s.model).get_output_embeddings()

    def lens_layers(self, n_states: int, k: int) -> list[int]:
        """``k`` evenly spaced indices into hidden_states among the intermediate layers (1 .. n-2;
        0 is the embeddings, n-1 is after the final norm and is read as the output logits)."""
        inner = list(range(1, n_states - 1))
        if k <= 0 or not inner:
            return []
        k = min(k, len(inner))
        return sorted({inner[round(j * (len(inner) - 1) / max(1, k - 1))] for j in range(k)})

    def loss(self, s: DefenseSession, mb: dict):
        cfg = s.cfg
        mix, ref = mb["mix"], mb["refusal"]
        lp_m, mask_m = token_logps(s.model(input_ids=mix["input_ids"], attention_mask=mix["attention_mask"]).logits,
                                   mix["labels"])
        lp_r, mask_r = token_logps(s.model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits,
                                   ref["labels"])
        harmless = -(lp_m.sum() + lp_r.sum()) / (mask_m.sum() + mask_r.sum()).clamp(min=1)
        harm = mb["harmful"]
        out = s.model(input_ids=harm["input_ids"], attention_mask=harm["attention_mask"], output_hidden_states=True)
        states = out.hidden_states  # (emb, layer 1, ..., layer L after the final norm), each (B, T, d)
        mmd = torch.stack([mmd_rbf(h, torch.randn_like(h)) for h in
                           (answer_states(x, harm["labels"], cfg.mmd_tokens) for x in states[1:])]).mean()
        lens = [mean_nll(out.logits, harm["labels"])]
        for i in self.lens_layers(len(states), cfg.lens_layers):
            lens.append(mean_nll(self.head(self.norm(states[i])), harm["labels"]))
        lens_nll = torch.stack(lens).mean()
        loss = harmless + cfg.beta * mmd - cfg.alpha * torch.log1p(lens_nll)
        return loss, {"harmless": float(harmless.detach()), "noise_mmd": float(mmd.detach()),
                      "lens_nll": float(lens_nll.detach())}

    def describe(self, s: DefenseSession) -> str:
        c = s.cfg
        return (f"RepNoise: harmless NLL + {c.beta} · MMD(harmful hidden states, noise) − {c.alpha} · "
                f"log(1 + logit-lens NLL of harmful answers at {c.lens_layers} layers + the output).")


defend_repnoise = session_defense(RepNoiseObjective, "RepNoise")


DEFENSES.register("repnoise", defend_repnoise, config_cls=RepNoiseConfig,
                  help="RepNoise: harmful answers' representations pushed to noise, harmless ones learnt")
