import pytest

from tamperlab.prompts import encode_prompts, format_prompt, get_format, list_formats


def test_formats_inherit_from_data_files():
    qa = get_format("plain-qa")
    assert qa.kind == "plain" and qa.template == "Question: {prompt}\nAnswer:"
    safety = get_format("chat-safety")
    assert safety.kind == "chat" and "harmless" in safety.system
    assert {"chat", "plain", "plain-qa", "chat-safety"} <= set(list_formats())


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="unknown prompt format 'nope'"):
        get_format("nope")


def test_chat_format_uses_tokenizer_template(tiny):
    text = format_prompt(tiny.tokenizer, "Hello there", "chat")
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nHello there<|im_end|>" in text
    sys_text = format_prompt(tiny.tokenizer, "Hi", "chat-safety")
    assert "<|im_start|>system\nYou are a helpful, honest and harmless" in sys_text


def test_plain_format_is_the_prompt_itself(tiny):
    assert format_prompt(tiny.tokenizer, "Hello there", "plain") == "Hello there"
    assert format_prompt(tiny.tokenizer, "2+2?", "plain-qa") == "Question: 2+2?\nAnswer:"


@pytest.mark.parametrize("fmt", ["chat", "plain", "chat-safety", "plain-qa"])
def test_no_duplicate_bos(tiny, fmt):
    tok = tiny.tokenizer
    bos = tok.bos_token_id
    for ids in encode_prompts(tok, ["How do I bake bread?", "x"], fmt):
        assert not (len(ids) > 1 and ids[0] == bos and ids[1] == bos)
        if fmt.startswith("plain"):  # SmolLM2's BOS is also its <|im_start|>, so chat has several
            assert ids.count(bos) <= 1


def test_chat_encoding_matches_template_tokens_exactly(tiny):
    tok = tiny.tokenizer
    [ids] = encode_prompts(tok, ["Hello"], "chat")
    text = format_prompt(tok, "Hello", "chat")
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # nothing added, nothing lost


def test_doubled_bos_is_collapsed():
    from tamperlab.prompts.formats import PromptFormat

    class FakeTok:  # a tokenizer that adds BOS to text that already starts with BOS
        bos_token_id = 1
        chat_template = None

        def __call__(self, texts, add_special_tokens):
            return {"input_ids": [[1, 1, 5, 6] for _ in texts]}

    ids = encode_prompts(FakeTok(), ["<s>hi"], PromptFormat("p", "plain"))
    assert ids == [[1, 5, 6]]
