"""LoRA on the one shared frozen base, with no copy of the model.

A defense trains an adapter *inside* the loaded model (PEFT injects its layers in place) and the
reference it is held to is the same weights with the adapter disabled, so memory is one model
plus the adapter, not two models. On exit the adapter layers are removed and every flag PEFT
touched is restored, so the process's cached model is bit-identical afterwards (tested)."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import torch

from ..utils.config import ConfigError

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def check_targets(model, targets: list[str], field: str = "lora_targets") -> None:
    """Every target must name a module of this model (fails before any training)."""
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ConfigError(f"field {field!r}: {missing} not in this model (it has e.g. "
                          f"{sorted(p for p in present if 'proj' in p)[:8]})")


def wrap_lora(model, cfg):
    """A LoRA adapter (rank, alpha, targets from ``cfg``) on ``model``, initialised from cfg.seed.
    PEFT injects into ``model`` itself: pass a copy to keep the original, or use ``lora_on``."""
    from peft import LoraConfig, get_peft_model

    check_targets(model, list(cfg.lora_targets))
    torch.manual_seed(cfg.seed)
    lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


@contextmanager
def _on_shared_base(model, attach):
    """``attach(model)`` (a PEFT model injected into ``model``) for the duration of the block, then
    removed; the base's weights stay frozen and its requires_grad flags and train/eval mode come back."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    peft_model = attach(model)
    try:
        yield peft_model
    finally:
        base = peft_model.unload()  # removes the LoRA layers, no merge: the base weights are untouched
        for n, p in base.named_parameters():
            p.requires_grad_(flags.get(n, p.requires_grad))
        base.train(was_training)
        if hasattr(base, "peft_config"):
            del base.peft_config


def lora_on(model, cfg):
    """``wrap_lora`` on the shared model for the duration of the block, then removed (bit-identical)."""
    return _on_shared_base(model, lambda m: wrap_lora(m, cfg))


class AdapterScope:
    """What holds adapters on the shared base for its lifetime (a defense session, a trainer): a
    context manager whose ``close`` (idempotent) takes them off again."""
    _scope = None

    def _hold(self, ctx):
        """Enter ``ctx`` (``lora_on``, ``adapters_on``, ``trainable_model``) and keep it to close."""
        held = ctx.__enter__()
        self._scope = ctx
        return held

    def close(self) -> None:
        if self._scope is not None:
            self._scope.__exit__(None, None, None)
            self._scope = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def base_param_count(model) -> int:
    """Parameters of the model without any LoRA weights (the denominator of trained fractions)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


@contextmanager
def trainable_model(lm_model, cfg):
    """The model a defense trains: LoRA on the shared base (``cfg.method == "lora"``) or, for full
    fine-tuning, a copy (its weights change, so the original must survive as the reference)."""
    if cfg.method == "lora":
        with lora_on(lm_model, cfg) as m:
            yield m
        return
    m = copy.deepcopy(lm_model)
    for p in m.parameters():
        p.requires_grad_(True)
    yield m


def merged_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """The base model's state dict with each LoRA delta added into its layer's weight: what
    ``merge_and_unload`` would save, without copying the model (only adapted weights are new)."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    merged = {}
    for name, mod in base.named_modules():
        if isinstance(mod, LoraLayer):
            with torch.no_grad():
                merged[f"{name}.weight"] = mod.base_layer.weight + mod.get_delta_weight(adapter)
    out = {}
    for key, t in base.state_dict().items():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        out[key] = merged.get(key, t)
    return out


def save_defended(model, tokenizer, out_dir: str | Path) -> Path:
    """A trained model as safetensors that load like any model (merged), plus the adapter alone
    under ``adapter/`` for a LoRA model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        base = model.get_base_model()
        base.save_pretrained(out, state_dict=merged_state_dict(model), safe_serialization=True)
        model.save_pretrained(out / "adapter")
    else:
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def adapters_on(model, cfg, names: list[str]):
    """Several named LoRA adapters (same rank, alpha and targets from ``cfg``) on the one shared
    frozen base, each initialised from its own seed (cfg.seed + its index); the first is active.
    PEFT's ``set_adapter(name)`` switches roles and makes only that adapter's weights trainable,
    so no step can train two. Removed on exit, the base restored as ``lora_on`` leaves it."""
    from peft import LoraConfig, get_peft_model

    check_targets(model, list(cfg.lora_targets))

    def lcfg():
        return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")

    def attach(m):
        torch.manual_seed(cfg.seed)
        peft_model = get_peft_model(m, lcfg(), adapter_name=names[0])
        for k, name in enumerate(names[1:], start=1):
            torch.manual_seed(cfg.seed + k)
            peft_model.add_adapter(name, lcfg())
        peft_model.set_adapter(names[0])
        return peft_model

    return _on_shared_base(model, attach)


def adapter_params(peft_model, name: str) -> list[torch.nn.Parameter]:
    """The LoRA weights of adapter ``name`` (PEFT names them ``...lora_A.<name>.weight``)."""
    return [p for n, p in peft_model.named_parameters() if "lora_" in n and f".{name}." in n]
