from tamperlab.generation import GenerationCache, GenerationConfig, generate, score_next_token

PROMPTS = ["Hi", "Tell me a long story about a dragon who", "What is 2+2?", "Name three colours."]



def _count_generate_calls(tiny, monkeypatch) -> list:
    """A list that grows by one each time the model really generates (a cache miss)."""
    calls: list = []
    orig = tiny.model.generate
    monkeypatch.setattr(tiny.model, "generate", lambda *a, **k: calls.append(1) or orig(*a, **k))
    return calls

def test_batched_greedy_equals_one_at_a_time(tiny):
    """Left padding must not change greedy outputs (wrong padding/positions would)."""
    cfg = GenerationConfig(max_new_tokens=12, batch_size=4)
    batched = generate(tiny, PROMPTS, "chat", cfg)
    single = [generate(tiny, [p], "chat", GenerationConfig(max_new_tokens=12, batch_size=1))[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(c, str) for c in batched)


def test_cache_reuses_generations(tiny, tmp_path, monkeypatch):
    cache = GenerationCache(tiny.fingerprint, root=tmp_path)
    cfg = GenerationConfig(max_new_tokens=6)
    first = generate(tiny, PROMPTS, "chat", cfg, cache)
    assert len(cache) == len(PROMPTS)
    calls = _count_generate_calls(tiny, monkeypatch)
    reloaded = GenerationCache(tiny.fingerprint, root=tmp_path)  # as a new process would
    assert generate(tiny, PROMPTS, "chat", cfg, reloaded) == first
    assert calls == []
    generate(tiny, PROMPTS, "plain", cfg, reloaded)  # another format is another key
    assert len(calls) == 1


def test_cache_skips_torn_last_line(tmp_path):
    c = GenerationCache("fp", root=tmp_path)
    c.put_many({"k1": "a"})
    with open(c.path, "a") as f:
        f.write('{"key": "k2", "compl')  # crash mid-append
    assert GenerationCache("fp", root=tmp_path).get("k1") == "a"
    assert GenerationCache("fp", root=tmp_path).get("k2") is None


def test_seeded_sampling_is_reproducible(tiny):
    cfg = GenerationConfig(max_new_tokens=8, do_sample=True, seed=3)
    a = generate(tiny, PROMPTS, "chat", cfg)
    assert generate(tiny, PROMPTS, "chat", cfg) == a
    other = generate(tiny, PROMPTS, "chat", GenerationConfig(max_new_tokens=8, do_sample=True, seed=4))
    assert other != a


def test_sampled_generations_are_cached_per_sampling_params(tiny, tmp_path, monkeypatch):
    """A seeded sample is reproducible, so it may be cached; but the key must hold every parameter
    the sample depends on (seed, temperature, top_p, batch size), or another setting would be
    answered with this one's samples."""
    from dataclasses import replace

    cfg = GenerationConfig(max_new_tokens=8, do_sample=True, seed=3, batch_size=4)
    cache = GenerationCache(tiny.fingerprint, root=tmp_path)
    first = generate(tiny, PROMPTS, "chat", cfg, cache)
    assert generate(tiny, PROMPTS, "chat", cfg) == first  # what is cached is what a fresh run draws
    seed4 = generate(tiny, PROMPTS, "chat", replace(cfg, seed=4))
    assert seed4 != first

    calls = _count_generate_calls(tiny, monkeypatch)
    reloaded = GenerationCache(tiny.fingerprint, root=tmp_path)  # as a new process would
    assert generate(tiny, PROMPTS, "chat", cfg, reloaded) == first
    assert calls == []
    assert generate(tiny, PROMPTS, "chat", replace(cfg, seed=4), reloaded) == seed4  # not seed 3's samples
    assert len(calls) == 1
    for other in (replace(cfg, temperature=0.5), replace(cfg, top_p=0.9), replace(cfg, batch_size=2),
                  replace(cfg, do_sample=False)):
        before = len(calls)
        generate(tiny, PROMPTS, "chat", other, reloaded)
        assert len(calls) > before, other  # a new key: generated, not served from the cache
    assert len(reloaded) == 6 * len(PROMPTS)
    n = len(calls)
    assert generate(tiny, PROMPTS, "chat", replace(cfg, seed=4), reloaded) == seed4 and len(calls) == n  # a hit


def test_stops_at_eos(tiny, monkeypatch):
    eos = tiny.tokenizer.eos_token_id
    orig = tiny.model.generate

    def fake(input_ids, **kw):  # model "emits" token 42, then EOS, then junk
        import torch
        tail = torch.tensor([[42, eos, 43, 44]] * input_ids.shape[0])
        return torch.cat([input_ids, tail], dim=1)

    monkeypatch.setattr(tiny.model, "generate", fake)
    out = generate(tiny, ["x"], "chat", GenerationConfig(max_new_tokens=4))
    assert out == [tiny.tokenizer.decode([42]).strip()]
    monkeypatch.setattr(tiny.model, "generate", orig)


def test_score_next_token_matches_unbatched_forward(tiny):
    import torch

    from tamperlab.prompts import encode_prompts

    cands = [[10], [11, 12]]
    batched = score_next_token(tiny, PROMPTS, cands, "chat", batch_size=4)
    for p, row in zip(PROMPTS, batched):
        ids = torch.tensor([encode_prompts(tiny.tokenizer, [p], "chat")[0]])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(ids).logits[0, -1], -1)
        assert abs(row[0] - logp[10].item()) < 1e-4
        assert abs(row[1] - torch.logsumexp(logp[[11, 12]], 0).item()) < 1e-4
