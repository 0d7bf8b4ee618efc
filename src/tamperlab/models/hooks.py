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


def decoder_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The decoder's blocks, in order, for any architecture the loader accepts: the longest
    ``ModuleList`` whose children each hold a weight matrix (a Linear, GPT-2's Conv1D; Llama's ``model.layers``, GPT-2's
    ``transformer.h``, GPT-NeoX's ``gpt_neox.layers``); a PEFT wrapper's path is kept as is."""
    best: tuple[str, torch.nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or not len(mod):
            continue
        if not all(any(w.ndim == 2 for w in child.parameters()) for child in mod):
            continue
        if best is None or len(mod) > len(best[1]):
            best = (name, mod)
    if best is None:
        raise ValueError("no decoder layers found (a ModuleList of blocks with weight matrices)")
    return [(f"{best[0]}.{i}", child) for i, child in enumerate(best[1])]


def _hidden(out):
    """A decoder block's hidden-state output: the tensor itself, or the first item of its tuple."""
    return out[0] if isinstance(out, (tuple, list)) else out


@contextmanager
def capture_layer_outputs(model: torch.nn.Module, layers: list[tuple[str, torch.nn.Module]]
                          ) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward stores every block's output hidden states (B, T, d), in layer
    order (still in the graph: ``torch.autograd.grad`` can differentiate a loss w.r.t. them)."""
    store: list[torch.Tensor] = []
    handles = [mod.register_forward_hook(lambda m, a, o: store.append(_hidden(o))) for _, mod in layers]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def perturb_layer_outputs(model: torch.nn.Module, layers: list[tuple[str, torch.nn.Module]],
                          deltas: list[torch.Tensor | None]) -> Iterator[None]:
    """Within the block, block ``i``'s output hidden states become ``h + deltas[i]`` (None: left
    alone); the rest of its output tuple passes through."""
    def hook(mod, args, out, _d):
        if _d is None:
            return out
        if isinstance(out, (tuple, list)):
            return (out[0] + _d.to(out[0].dtype), *out[1:])
        return out + _d.to(out.dtype)

    handles = [mod.register_forward_hook(lambda m, a, o, _d=d: hook(m, a, o, _d))
               for (_, mod), d in zip(layers, deltas)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The norm the decoder applies before the LM head (``model.norm``, ``ln_f``, ``final_layernorm``,
    ``norm_f``): the logit lens reads an intermediate layer through it and the head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base
    for name in ("norm", "final_layernorm", "ln_f", "norm_f"):
        mod = getattr(decoder, name, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    raise ValueError("no final norm found on the decoder (norm / final_layernorm / ln_f / norm_f)")
