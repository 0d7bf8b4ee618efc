"""What a 7B model needs from the plumbing: a weights fingerprint without float64 copies, a
generation cache whose memory holds keys not texts, and a dtype choice."""
import hashlib

import pytest
import torch

from tamperlab.generation.cache import GenerationCache
from tamperlab.models.loading import resolve_dtype, weights_fingerprint


def _old_fingerprint(model) -> str:
    """The pre-refactor formula (a float64 copy of every tensor), kept here by hand."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        t = p.detach().double()
        h.update(f"{name}:{tuple(t.shape)}:{t.sum().item():.10e}:{t.abs().sum().item():.10e}".encode())
    return h.hexdigest()[:16]


def test_chunked_fingerprint_equals_the_float64_copy_formula(tiny):
    assert weights_fingerprint(tiny.model) == _old_fingerprint(tiny.model) == tiny.fingerprint
    m = torch.nn.Linear(3000, 1000)  # 3M weights: several 1M-element chunks
    assert weights_fingerprint(m) == _old_fingerprint(m)
    with torch.no_grad():
        m.weight[0, 0] += 1e-3
    assert weights_fingerprint(m) != _old_fingerprint(torch.nn.Linear(3000, 1000))


def test_cache_index_holds_offsets_and_reads_texts_back(tmp_path):
    c = GenerationCache("fp", root=tmp_path)
    c.put_many({"a": "first answer", "b": "zweite Antwort ✓"})
    c.put_many({"c": "third"})
    assert all(isinstance(v, int) for v in c._offset.values())  # no completion text held in memory
    again = GenerationCache("fp", root=tmp_path)
    assert [again.get(k) for k in "abc"] == ["first answer", "zweite Antwort ✓", "third"]
    assert again.get("zzz") is None and len(again) == 3


def test_two_writers_on_one_file_both_read_back(tmp_path):
    a, b = GenerationCache("fp", root=tmp_path), GenerationCache("fp", root=tmp_path)
    a.put_many({"x": "from a"})
    b.put_many({"y": "from b"})  # b's index never saw a's line; its offsets must still be right
    a.put_many({"z": "a again"})
    assert b.get("y") == "from b" and a.get("z") == "a again" and a.get("x") == "from a"
    assert {k: GenerationCache("fp", root=tmp_path).get(k) for k in "xyz"} == {
        "x": "from a", "y": "from b", "z": "a again"}


def test_a_torn_last_line_is_skipped(tmp_path):
    c = GenerationCache("fp", root=tmp_path)
    c.put_many({"a": "ok"})
    with c.path.open("ab") as f:
        f.write(b'{"key": "b", "completion": "cut o')
    again = GenerationCache("fp", root=tmp_path)
    assert again.get("a") == "ok" and again.get("b") is None


def test_dtype_auto_and_bad_names():
    assert resolve_dtype("auto") == ("bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                     else "float32")
    with pytest.raises(ValueError, match="field 'dtype': 'fp8'"):
        resolve_dtype("fp8")


def test_defend_rejects_a_bad_dtype_before_loading(tmp_path):
    from tamperlab.defenses import defend
    from tamperlab.utils.config import ConfigError

    with pytest.raises(ConfigError, match="dtype"):
        defend("tiny-llama", "sft", out_dir=tmp_path / "d", dtype="fp8")
    assert not (tmp_path / "d").exists()
