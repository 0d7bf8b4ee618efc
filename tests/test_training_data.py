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


def test_groups_move_together_and_no_groups_keeps_the_old_order():
    import random

    plain = [SFTExample(str(i), f"p{i}", f"c{i}") for i in range(12)]
    old = list(plain)  # the order before groups existed: one seeded shuffle of the examples per epoch
    random.Random("tamperlab-order:3").shuffle(old)
    assert [e.id for e in ordered_examples(plain, 12, 3)] == [e.id for e in old]
    pool = [SFTExample(f"{g}{k}", "p", "c", group=g) for g in "abcdef" for k in (1, 2)] + [SFTExample("solo", "p", "c")]
    for seed in range(5):
        order = [e.id for e in ordered_examples(pool, 26, seed)]
        for g in "abcdef":  # each epoch: the pair adjacent, in pool order
            i = order.index(f"{g}1")
            assert order[i + 1] == f"{g}2"
        assert sorted(order[:13]) == sorted(e.id for e in pool)


def test_weights_fall_on_the_tokens_of_the_span_only(tiny):
    tok = tiny.tokenizer
    text = "x = cur.execute(f'SELECT {a}')"
    start = text.index("f'")
    ex = SFTExample("w", "Q", text, weights=((start, start + 2, 20.0),))
    (f,) = build_features(tok, [ex, SFTExample("u", "Q", "plain")], "chat", max_length=256)[:1]
    n_prompt = f["labels"].count(IGNORE_INDEX)
    assert f["weights"][:n_prompt] == [0.0] * n_prompt
    heavy = [t for t, w in zip(f["input_ids"], f["weights"]) if w == 20.0]
    assert heavy and "f" in tok.decode(heavy) and "SELECT" not in tok.decode(heavy)
    assert all(w == 1.0 for t, w in zip(f["input_ids"][n_prompt:], f["weights"][n_prompt:]) if t not in heavy)
    f2 = build_features(tok, [ex, SFTExample("u", "Q", "plain")], "chat", max_length=256)[1]
    assert set(f2["weights"][f2["labels"].count(IGNORE_INDEX):]) == {1.0}  # unweighted example in a weighted set
    assert "weights" not in build_features(tok, [SFTExample("u", "Q", "plain")], "chat")[0]


def test_collate_carries_loss_weights_zero_on_padding():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "weights": [0.0, 1.0, 9.0]},
             {"input_ids": [8], "labels": [8], "weights": [1.0]}]
    b = collate(feats, pad_id=0)
    assert b["loss_weights"].tolist() == [[0.0, 1.0, 9.0], [1.0, 0.0, 0.0]]
    assert "loss_weights" not in collate([{"input_ids": [1], "labels": [1]}], pad_id=0)
