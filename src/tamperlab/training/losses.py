"""Sequence log-probabilities and the losses defenses combine: NLL, DPO/IPO, KL to a reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next label token and its mask; logits (B, T, V), labels (B, T)."""
    logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t+1
    mask = labels != IGNORE_INDEX  # (B, T-1)
    safe = labels.masked_fill(~mask, 0)
    lp = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return lp * mask, mask


def sequence_logps(model, batch: dict, average: bool = False) -> torch.Tensor:
    """Log-prob of the completion tokens per sequence, (B,): summed, or with ``average`` the mean
    per token (a preference loss on that scale sits beside per-token NLL and KL terms)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    lp, mask = token_logps(out.logits, batch["labels"])
    return lp.sum(-1) / mask.sum(-1).clamp(min=1) if average else lp.sum(-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over the completion tokens of a batch (all tokens pooled): SFT's loss, AntiDote's
    LM term and refusal anchor, the adversary's NLL objective."""
    lp, mask = token_logps(logits, labels)
    return -lp.sum() / mask.sum().clamp(min=1)


def nll(model, batch: dict) -> torch.Tensor:
    """Mean NLL over completion tokens (what SFT minimises)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return mean_nll(out.logits, batch["labels"])


def weighted_nll(logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor) -> torch.Tensor:
    """sum(w * nll) / sum(w) over completion tokens; loss_weights (B, T) is the weight of the token
    at each position (``collate``'s ``loss_weights``). All ones: ``nll``."""
    lp, mask = token_logps(logits, labels)  # (B, T-1)
    ws = loss_weights[:, 1:].to(lp.dtype) * mask  # position t predicts token t+1: its weight
    return -(lp * ws).sum() / ws.sum().clamp(min=1e-8)


def preference_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                    ref_rejected: torch.Tensor, beta: float = 0.1, kind: str = "dpo") -> torch.Tensor:
    """DPO (Rafailov et al.) or IPO (Azar et al.) on (B,) sequence log-probs: prefer chosen."""
    margin = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)  # (B,)
    if kind == "dpo":
        return -F.logsigmoid(beta * margin).mean()
    if kind == "ipo":
        return ((margin - 1 / (2 * beta)) ** 2).mean()
    raise ValueError(f"unknown preference loss {kind!r}: dpo | ipo")


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over completion tokens of KL(reference ‖ model) of the next-token distributions."""
    mask = (labels[:, 1:] != IGNORE_INDEX).float()  # (B, T-1)
    lp = F.log_softmax(logits[:, :-1].float(), -1)
    ref = F.log_softmax(ref_logits[:, :-1].float(), -1)
    kl = (ref.exp() * (ref - lp)).sum(-1)  # (B, T-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy between samples x (n, d) and y (m, d) with a sum of Gaussian
    kernels (biased V-statistic: exactly 0 for identical samples, >= 0 always). Bandwidths are
    ``scales`` times the mean squared distance of the pooled samples (detached), so the term is on
    one scale whatever the hidden states' magnitude: RepNoise's distance to noise."""
    x, y = x.float(), y.float()
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)  # (n+m, n+m)
    base = d2.detach().mean().clamp(min=1e-8)
    k = sum(torch.exp(-d2 / (s * base)) for s in scales) / len(scales)
    n = x.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def relative_distance(h: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of ‖h − ref‖² / ‖ref‖² (scale-free representation distance to
    the original model, TAR's retain term); h, ref (B, T, d), mask (B, T)."""
    num = (h.float() - ref.float()).pow(2).sum(-1)
    den = ref.float().pow(2).sum(-1).clamp(min=1e-8)
    m = mask.to(num.dtype)
    return (num / den * m).sum() / m.sum().clamp(min=1)
