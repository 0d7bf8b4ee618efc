import pytest

from tamperlab.models import MODELS, load_model, resolve_model_dir
from tamperlab.models.loading import weights_fingerprint


def test_presets_registered():
    assert {"smollm2-135m-instruct", "tiny-llama", "tiny-llama-4l"} <= set(MODELS.names())


def test_tiny_model_is_small_llama_with_smollm2_tokenizer(tiny):
    assert tiny.model.config.model_type == "llama"
    assert sum(p.numel() for p in tiny.model.parameters()) < 5_000_000
    assert tiny.tokenizer.eos_token == "<|im_end|>" and tiny.tokenizer.chat_template


def test_one_load_per_process_and_stable_fingerprint(tiny):
    assert load_model("tiny-llama") is tiny
    again = load_model(resolve_model_dir("tiny-llama"))  # same weights by path
    assert again.fingerprint == tiny.fingerprint
    import torch
    with torch.no_grad():
        again.model.model.embed_tokens.weight[0, 0] += 1.0
    assert weights_fingerprint(again.model) != tiny.fingerprint


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
