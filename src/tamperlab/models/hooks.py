"""Architecture-agnostic hooks on a decoder's linear projections ("sites"): read their inputs,
or add a low-rank weight patch to their outputs, without editing the model's code.

A site is found by module-name suffix (``q_proj``, ``o_proj``, ``down_proj``, ...) and its layer
index is the first integer path component, which covers Llama/Mistral/Qwen/Gemma/GPT-NeoX-style
naming. Weight-space and latent attacks (and AntiDote's adversary) build on these two verbs."""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class Site:
    name: str  # full module path
    layer: int
    kind: str  # the name suffix: q_proj, v_proj, ...
    in_features: int
    out_features: int


def find_sites(model: torch.nn.Module, kinds: list[str] | tuple[str, ...]) -> list[Site]:
    """Every module whose name ends in one of ``kinds`` and that has in/out features (a Linear, or a
    PEFT LoRA wrapper around one); the wrapper's own children are not sites."""
    sites = []
    for name, mod in model.named_modules():
        kind = name.rsplit(".", 1)[-1]
        if kind not in kinds or not hasattr(mod, "in_features"):
            continue
        m = re.search(r"\.(\d+)\.", name)
        if m is None:
            continue
        sites.append(Site(name, int(m.group(1)), kind, int(mod.in_features), int(mod.out_features)))
    if not sites:
        raise ValueError(f"no modules named {list(kinds)} with in/out features in this model")
    return sites


@contextmanager
def capture_inputs(model: torch.nn.Module, sites: list[Site]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward stores each site's input (B, T, in) under its name."""
    store: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    handles = [mods[s.name].register_forward_pre_hook(
        lambda mod, args, _n=s.name: store.__setitem__(_n, args[0])) for s in sites]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def low_rank_patch(model: torch.nn.Module, patches: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   scale: float = 1.0) -> Iterator[None]:
    """Within the block, site ``name`` computes ``W x + scale · V (U x)`` for its patch (U: r×in,
    V: out×r), i.e. its weight is W + scale · V·U. Gradients flow into U and V. Per-example
    patches (U: B×r×in, V: B×out×r) patch each sequence of the batch with its own ΔW."""
    mods = dict(model.named_modules())

    def hook(mod, args, out, _uv):
        u, v = _uv
        x = args[0]  # (B, T, in)
        return out + scale * (x @ u.mT.to(x.dtype)) @ v.mT.to(x.dtype)  # (B, T, r) -> (B, T, out)

    handles = [mods[n].register_forward_hook(lambda mod, a, o, _uv=uv: hook(mod, a, o, _uv))
               for n, uv in patches.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
