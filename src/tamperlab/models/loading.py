"""Load a model by preset name, HF id or local directory, once per process.

Device placement goes through Accelerate's ``PartialState`` so the same code runs on CPU, one GPU,
or a process of a multi-GPU launch; nothing here hard-codes a device.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .registry import MODELS


@dataclass
class LoadedModel:
    name: str  # what the user asked for
    source: str  # local directory or hub id it came from
    model: Any
    tokenizer: Any
    fingerprint: str = ""  # content hash of the weights: cache keys survive renames
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        """The id batches are padded with. load_model sets a pad token; a LoadedModel built by hand
        may lack one, and padding is masked out anyway, so EOS (then 0) stands in."""
        tok = self.tokenizer
        for i in (tok.pad_token_id, tok.eos_token_id):
            if i is not None:
                return int(i)
        return 0


def default_device() -> torch.device:
    if env := os.environ.get("TAMPERLAB_DEVICE"):
        return torch.device(env)
    from accelerate import PartialState

    return PartialState().device


def resolve_model_dir(name_or_path: str) -> str:
    """Preset name -> its cached directory; an existing path (a model, or an adapter saved with
    ``save_model_dir(merge=False)``) -> itself; anything else is a hub id."""
    if name_or_path in MODELS:
        return str(MODELS.get(name_or_path).obj())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not ((p / "config.json").exists() or (p / "adapter_config.json").exists()):
            raise FileNotFoundError(f"{p}: not a model directory (no config.json, nor the adapter_config.json "
                                    "of a saved adapter)")
        return str(p)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path  # HF hub id; transformers reports if it is unreachable
    raise FileNotFoundError(
        f"model {name_or_path!r} is neither a preset ({', '.join(MODELS.names())}), "
        "an existing directory, nor an owner/name hub id")


def _reductions(t: torch.Tensor, chunk: int = 1 << 20) -> tuple[float, float]:
    """(sum, sum |x|) accumulated in float64 a chunk at a time, on the tensor's own device: no
    float64 copy of the tensor (8 MiB of scratch however large the model)."""
    flat = t.detach().reshape(-1)
    s = torch.zeros((), dtype=torch.float64, device=flat.device)
    a = torch.zeros((), dtype=torch.float64, device=flat.device)
    for part in flat.split(chunk):
        d = part.double()
        s += d.sum()
        a += d.abs().sum()
    return s.item(), a.item()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Cheap content hash: per-tensor name, shape and two float64 reductions (same weights -> same key)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            total, absolute = _reductions(p)
            h.update(f"{name}:{tuple(p.shape)}:{total:.10e}:{absolute:.10e}".encode())
    return h.hexdigest()[:16]


_CACHE: dict[tuple, LoadedModel] = {}
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype: str) -> str:
    """``auto``: bfloat16 where the GPU supports it (half the memory of float32, the same range),
    else float32 (CPU kernels for bf16 are slow and the tiny test models gain nothing)."""
    if dtype not in DTYPES:
        raise ValueError(f"field 'dtype': {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    return dtype


def load_model(name_or_path: str, *, device: str | torch.device | None = None,
               dtype: str = "float32", trust_remote_code: bool = False) -> LoadedModel:
    """One load per process: repeated calls with the same arguments return the same object.
    ``dtype``: float32 | bfloat16 | float16 | auto (bf16 where supported)."""
    dtype = resolve_dtype(dtype)
    key = (name_or_path, str(device), dtype, trust_remote_code)
    if key in _CACHE:
        return _CACHE[key]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_model_dir(name_or_path)
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if (Path(src) / "adapter_config.json").exists() and not (Path(src) / "config.json").exists():
        from peft import AutoPeftModelForCausalLM  # an adapter alone: on the base it names, merged

        model = AutoPeftModelForCausalLM.from_pretrained(
            src, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            use_safetensors=True).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, use_safetensors=True)
    model.to(torch.device(device) if device else default_device())
    model.eval()
    lm = LoadedModel(name=name_or_path, source=src, model=model, tokenizer=tok,
                     fingerprint=weights_fingerprint(model))
    _CACHE[key] = lm
    return lm
