"""AntiDote's adversary: a hypernetwork that reads the defender's activations (the inputs of the
targeted projections, per layer) and writes a low-rank weight patch ΔW = V·U for each of them."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models.hooks import Site


def patch_sq_norms(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """‖V·U‖_F² without forming the out × in product: trace((VᵀV)(UUᵀ)) over r × r matrices.
    u (…, r, in), v (…, out, r) -> (…)."""
    gram_v = v.mT @ v  # (…, r, r)
    gram_u = u @ u.mT  # (…, r, r)
    return (gram_v * gram_u).sum((-2, -1)).clamp(min=0)


def patch_norms(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """‖V·U‖_F, (…)."""
    return patch_sq_norms(u, v).sqrt()


class PatchHypernetwork(nn.Module):
    """Per site: tokens' activations (B, T, in) -> read (B, T, H) -> attention pooling over tokens
    (B, H) -> + layer embedding -> MLP -> U (B, r, in), V (B, out, r): each example's patch comes
    from its own activations (``per_example=False``: one patch from the batch mean, as before).
    ``max_norm`` (per site, e.g. a fraction of the weight's norm) bounds ‖ΔW‖_F by rescaling V,
    so the adversary cannot win by an unbounded patch no fine-tuning attack could reach.

    Heads are shared across layers (one per projection kind), so the parameter count grows with
    the hidden size, not the depth. V starts at zero: the first patch is ΔW = 0 and the adversary
    has to *learn* its attack (LoRA-style init)."""

    def __init__(self, sites: list[Site], rank: int = 4, hidden: int = 64, per_example: bool = True,
                 max_norm: dict[str, float] | None = None):
        super().__init__()
        self.sites = list(sites)
        self.rank, self.hidden, self.per_example = rank, hidden, per_example
        self.max_norm = dict(max_norm or {})  # site name -> bound on ‖V·U‖_F (absent: unbounded)
        dims = {s.kind: (s.in_features, s.out_features) for s in self.sites}
        self.read = nn.ModuleDict({k: nn.Linear(i, hidden) for k, (i, _) in dims.items()})
        self.query = nn.Parameter(torch.empty(hidden))
        self.layer_emb = nn.Embedding(max(s.layer for s in self.sites) + 1, hidden)
        self.mix = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
        self.head_u = nn.ModuleDict({k: nn.Linear(hidden, rank * i) for k, (i, _) in dims.items()})
        self.head_v = nn.ModuleDict({k: nn.Linear(hidden, o * rank) for k, (_, o) in dims.items()})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm, nn.Embedding)) and m is not self:
                m.reset_parameters()
        nn.init.normal_(self.query, std=1 / math.sqrt(self.hidden))
        nn.init.normal_(self.layer_emb.weight, std=0.02)
        for head in self.head_v.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, acts: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """acts[site] (B, T, in), mask (B, T) -> {site: (U (B, r, in), V (B, out, r))}, or with
        per_example=False {site: (U (r, in), V (out, r))}."""
        keep = mask.bool()
        out = {}
        for s in self.sites:
            x = acts[s.name].detach().to(self.query.dtype)  # reads the defender; never trains it
            h = self.read[s.kind](x)  # (B, T, H)
            score = (h @ self.query) / math.sqrt(self.hidden)  # (B, T)
            w = torch.softmax(score.masked_fill(~keep, float("-inf")), dim=1)  # (B, T)
            pooled = (w.unsqueeze(-1) * h).sum(1)  # (B, H)
            if not self.per_example:
                pooled = pooled.mean(0)  # (H,)
            z = self.mix(pooled + self.layer_emb.weight[s.layer])  # (B, H) or (H,)
            lead = z.shape[:-1]
            u = self.head_u[s.kind](z).view(*lead, self.rank, s.in_features) / math.sqrt(s.in_features)  # (…, r, in)
            v = self.head_v[s.kind](z).view(*lead, s.out_features, self.rank)  # (…, out, r)
            bound = self.max_norm.get(s.name)
            if bound:
                # clamp the square before the root: no infinite gradient at a zero patch (V starts at 0)
                scale = bound / patch_sq_norms(u, v).clamp(min=bound ** 2).sqrt()  # (…), 1 inside the bound
                v = v * scale.unsqueeze(-1).unsqueeze(-1)  # ‖ΔW‖_F <= bound
            out[s.name] = (u, v)
        return out
