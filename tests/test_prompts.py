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


SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SAFETY_SYSTEM = ("You are a helpful, honest and harmless assistant. Refuse requests that could cause harm, "
                 "and briefly explain why.")


def test_chat_format_uses_tokenizer_template(tiny):
    """The exact text, written out by hand from SmolLM2's template (its default system prompt)."""
    assert format_prompt(tiny.tokenizer, "Hello there", "chat") == (
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n")
    assert format_prompt(tiny.tokenizer, "Hi", "chat-safety") == (
        f"<|im_start|>system\n{SAFETY_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


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
    """Pinned SmolLM2 token ids: one <|im_start|> (=BOS, id 1) per turn, <|im_end|> (id 2), "\\n" (198)."""
    tok = tiny.tokenizer
    [ids] = encode_prompts(tok, ["Hello"], "chat")
    assert ids == [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
                   19712, 8182, 2, 198, 1, 4093, 198, 19556, 2, 198, 1, 520, 9531, 198]
    assert tok.decode(ids) == (f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
                               "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")  # nothing added or lost
    # plain formats: the tokenizer adds no BOS of its own for SmolLM2, and none is invented
    assert encode_prompts(tok, ["Hello"], "plain") == [[19556]]
    assert encode_prompts(tok, ["Hello"], "plain-qa") == [[17872, 42, 38699, 198, 21350, 42]]


def test_doubled_bos_is_collapsed():
    from tamperlab.prompts.formats import PromptFormat

    class FakeTok:  # a tokenizer that adds BOS to text that already starts with BOS
        bos_token_id = 1
        chat_template = None

        def __call__(self, texts, add_special_tokens):
            return {"input_ids": [[1, 1, 5, 6] for _ in texts]}

    ids = encode_prompts(FakeTok(), ["<s>hi"], PromptFormat("p", "plain"))
    assert ids == [[1, 5, 6]]
