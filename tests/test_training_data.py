"""The completion-only loss mask, padding and seeded data order, pinned exactly (TRL style)."""
from tamperlab.prompts.formats import encode_prompts
from tamperlab.training import IGNORE_INDEX, SFTExample, build_features, collate, ordered_examples


def test_label_mask_is_exactly_the_prompt(tiny):
    tok = tiny.tokenizer
    ex = SFTExample("a", "How do I bake bread?", "Mix flour and water.")
    (f,) = build_features(tok, [ex], "chat", max_length=256)
    prompt = encode_prompts(tok, [ex.prompt], "chat")[0]
    answer = tok(ex.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert f["input_ids"] == prompt + answer
    assert f["labels"] == [IGNORE_INDEX] * len(prompt) + answer
    # the first supervised token is the first answer token, right after the assistant header
    first = next(i for i, l in enumerate(f["labels"]) if l != IGNORE_INDEX)
    assert tok.decode(f["input_ids"][:first]).endswith("<|im_start|>assistant\n")
    assert f["labels"][-1] == tok.eos_token_id  # the model learns to stop


def test_plain_format_mask_and_truncation(tiny):
    tok = tiny.tokenizer
    ex = SFTExample("b", "Say hi", "hi " * 50)
    (f,) = build_features(tok, [ex], "plain", max_length=12)
    prompt = encode_prompts(tok, [ex.prompt], "plain")[0]
    assert len(f["input_ids"]) == 12
    assert f["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert all(l != IGNORE_INDEX for l in f["labels"][len(prompt):])


def test_prompt_longer_than_max_length_is_an_error(tiny):
    import pytest

    with pytest.raises(ValueError, match="example 'c'"):
        build_features(tiny.tokenizer, [SFTExample("c", "word " * 100, "x")], "plain", max_length=16)


def test_collate_pads_right_and_masks_padding():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    b = collate(feats, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_seeded_order_same_seed_same_order_other_seed_other_order():
    pool = [SFTExample(str(i), f"p{i}", f"c{i}") for i in range(20)]
    a, b, c = ordered_examples(pool, 50, 0), ordered_examples(pool, 50, 0), ordered_examples(pool, 50, 1)
    assert [e.id for e in a] == [e.id for e in b]
    assert [e.id for e in a] != [e.id for e in c]
    # each epoch is a permutation of the whole pool
    assert sorted(e.id for e in a[:20]) == sorted(e.id for e in pool)
    assert sorted(e.id for e in a[20:40]) == sorted(e.id for e in pool)


def test_examples_whose_prompt_cannot_fit_are_left_out_before_ordering(tiny):
    from tamperlab.training.data import fit_pool

    pool = [SFTExample("short", "Hi", "Hello"), SFTExample("long", "word " * 200, "x"),
            SFTExample("mid", "What is two plus two?", "Four")]
    kept, dropped = fit_pool(tiny.tokenizer, pool, "plain", max_length=32)
    assert [e.id for e in kept] == ["short", "mid"] and dropped == ["long"]
