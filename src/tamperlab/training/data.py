"""(prompt, completion) pairs -> token ids and labels with the loss on completion tokens only."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..prompts.formats import PromptFormat, encode_prompts

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips


@dataclass(frozen=True)
class SFTExample:
    id: str
    prompt: str
    completion: str


def build_features(tokenizer, examples: list[SFTExample], fmt: str | PromptFormat = "chat",
                   max_length: int = 256) -> list[dict]:
    """One feature dict per example: ``input_ids`` = prompt ⧺ completion ⧺ EOS and ``labels`` with
    every prompt position set to -100, so the model learns to answer, not to ask.

    The prompt is encoded exactly as at evaluation time (same format, same BOS handling), so the
    attack trains the distribution it is measured on. Completions are cut to fit ``max_length``;
    an example whose prompt alone does not fit is an error (silently dropping it would change the
    data mix)."""
    eos = tokenizer.eos_token_id
    prompt_ids = encode_prompts(tokenizer, [e.prompt for e in examples], fmt)
    feats = []
    for ex, p in zip(examples, prompt_ids):
        c = tokenizer(ex.completion, add_special_tokens=False)["input_ids"] + [eos]
        if len(p) >= max_length:
            raise ValueError(f"example {ex.id!r}: prompt is {len(p)} tokens, max_length is {max_length}")
        c = c[: max_length - len(p)]
        feats.append({"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c, "id": ex.id})
    return feats


def fit_pool(tokenizer, pool: list[SFTExample], fmt: str | PromptFormat, max_length: int) -> tuple[list[SFTExample], list[str]]:
    """Drop examples whose prompt alone leaves no room for an answer token in ``max_length``
    (before the seeded order is drawn, so the order stays a function of the seed and the data);
    returns (kept, dropped ids) so the caller can say how many went."""
    lengths = [len(ids) for ids in encode_prompts(tokenizer, [e.prompt for e in pool], fmt)]
    kept = [e for e, n in zip(pool, lengths) if n < max_length]
    return kept, [e.id for e, n in zip(pool, lengths) if n >= max_length]


def collate(features: list[dict], pad_id: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss. ``device``: where the
    tensors go (the Trainer moves them itself; hand-written loops pass their model's device)."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(features), width), dtype=torch.long)  # (B, T)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}


def ordered_examples(pool: list[SFTExample], n: int, seed: int) -> list[SFTExample]:
    """The exact sequence of ``n`` training examples for a seed: seeded shuffles of the pool, one
    epoch after another. The trainer reads it sequentially, so the data order is a pure function of
    (pool, seed), testable and identical on resume."""
    if not pool:
        raise ValueError("training data is empty")
    rng = random.Random(f"tamperlab-order:{seed}")
    out: list[SFTExample] = []
    while len(out) < n:
        epoch = list(pool)
        rng.shuffle(epoch)
        out += epoch
    return out[:n]
