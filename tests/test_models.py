import pytest

from tamperlab.models import MODELS, load_model, resolve_model_dir
from tamperlab.models.loading import weights_fingerprint


# the tiny presets' architectures, and their parameter counts worked out by hand (tied embeddings):
# embed V*h + layers * (q h*h + k,v 2*h*kv + o h*h + mlp 3*h*i + 2 norms 2*h) + final norm h,
# with V = 49152 (SmolLM2's tokenizer) and kv = 2 heads * h/4
TINY = {"tiny-llama": (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2), 49152 * 64 + 2 * (4096 + 2 * 2048 + 4096 + 3 * 8192 + 128) + 64),
        "tiny-llama-4l": (dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                               num_key_value_heads=2), 49152 * 128 + 4 * (16384 + 2 * 8192 + 16384 + 3 * 32768 + 256) + 128)}


def test_every_model_preset_is_tested_here():
    assert sorted(MODELS.names()) == sorted(["smollm2-135m-instruct", *TINY])
    assert TINY["tiny-llama"][1] == 3_219_776 and TINY["tiny-llama-4l"][1] == 6_882_432


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_preset_builds_the_stated_llama_that_generates(name):
    from tamperlab.generation import GenerationConfig, generate

    arch, n_params = TINY[name]
    lm = load_model(name)
    cfg = lm.model.config
    assert {k: getattr(cfg, k) for k in arch} == arch
    assert (cfg.model_type, cfg.vocab_size, cfg.tie_word_embeddings) == ("llama", 49152, True)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 2)  # <|im_start|>, <|im_end|>
    assert sum(p.numel() for p in lm.model.parameters()) == n_params
    assert len(lm.tokenizer) == 49152 and lm.tokenizer.eos_token == "<|im_end|>"
    # random weights: greedy text is junk (tiny-llama's chat answer is only newlines), but it is text
    out = generate(lm, ["Hello", "What is 2+2?"], "plain", GenerationConfig(max_new_tokens=5))
    assert len(out) == 2 and all(isinstance(o, str) and o for o in out)
    assert generate(lm, ["Hello", "What is 2+2?"], "plain", GenerationConfig(max_new_tokens=5)) == out


def test_tiny_preset_is_the_same_weights_when_built_again(tiny, tmp_path, monkeypatch):
    """"same preset -> same weights on every machine run": a fresh cache rebuilds the identical model."""
    import shutil

    from transformers import AutoModelForCausalLM

    from tamperlab.utils.paths import cache_dir

    shutil.copytree(cache_dir() / "tokenizers", tmp_path / "tokenizers")  # the tokenizer alone, not the weights
    monkeypatch.setenv("TAMPERLAB_CACHE", str(tmp_path))
    built = MODELS.get("tiny-llama").obj()
    assert str(built).startswith(str(tmp_path)) and built != tiny.source
    assert weights_fingerprint(AutoModelForCausalLM.from_pretrained(built)) == tiny.fingerprint


def test_default_preset_uses_a_complete_cached_conversion(tmp_path, monkeypatch):
    """The real model is never loaded in tests: its entry returns a complete cached directory as
    is (no conversion, no download), and treats an incomplete one as missing."""
    monkeypatch.setenv("TAMPERLAB_CACHE", str(tmp_path))
    d = tmp_path / "models" / "smollm2-135m-instruct"
    d.mkdir(parents=True)
    for f in ("config.json", "tokenizer.json", "model.safetensors"):
        (d / f).write_text("{}")
    assert resolve_model_dir("smollm2-135m-instruct") == str(d)
    from tamperlab.models.presets import _is_complete

    (d / "model.safetensors").unlink()
    assert not _is_complete(d)


def test_tiny_model_is_small_llama_with_smollm2_tokenizer(tiny):
    assert tiny.model.config.model_type == "llama"
    assert sum(p.numel() for p in tiny.model.parameters()) < 5_000_000
    assert tiny.tokenizer.eos_token == "<|im_end|>" and tiny.tokenizer.chat_template


def test_one_load_per_process_and_stable_fingerprint(tiny):
    assert load_model("tiny-llama") is tiny
    again = load_model(resolve_model_dir("tiny-llama"))  # same weights by path
    assert again.fingerprint == tiny.fingerprint
    import torch
    w = again.model.model.embed_tokens.weight
    saved = w[0, 0].item()
    with torch.no_grad():
        w[0, 0] += 1.0
    try:
        assert weights_fingerprint(again.model) != tiny.fingerprint
    finally:
        with torch.no_grad():
            w[0, 0] = saved  # the cached model is shared by later tests: repair it bit-exactly
    assert weights_fingerprint(again.model) == tiny.fingerprint


def test_bad_model_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        resolve_model_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        resolve_model_dir("no-such-model")


def test_pad_id_is_the_pad_token_then_eos_then_zero(tiny):
    from types import SimpleNamespace

    from tamperlab.models.loading import LoadedModel

    assert tiny.pad_id == tiny.tokenizer.pad_token_id  # load_model always sets one
    tok = SimpleNamespace(pad_token_id=None, eos_token_id=7)
    assert LoadedModel("x", "x", tiny.model, tok).pad_id == 7
    tok = SimpleNamespace(pad_token_id=None, eos_token_id=None)
    assert LoadedModel("x", "x", tiny.model, tok).pad_id == 0
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=7)  # 0 is a real id, not "missing"
    assert LoadedModel("x", "x", tiny.model, tok).pad_id == 0
