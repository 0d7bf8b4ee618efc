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
