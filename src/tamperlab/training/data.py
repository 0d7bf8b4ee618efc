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
    # Examples sharing a non-empty group stay next to each other in the training order (contrast
    # pairs in one batch, so what the pair has in common cancels in the gradient).
    group: str = ""
    # (start, end, weight): the loss on completion tokens overlapping characters [start, end) is
    # weighted (others: 1), for data where a few tokens carry what is being taught.
    weights: tuple[tuple[int, int, float], ...] = ()


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
    weighted = any(e.weights for e in examples)  # then every feature carries "weights" (one batch shape)
    feats = []
    for ex, p in zip(examples, prompt_ids):
        enc = tokenizer(ex.completion, add_special_tokens=False, return_offsets_mapping=weighted)
        c = enc["input_ids"] + [eos]
        if len(p) >= max_length:
            raise ValueError(f"example {ex.id!r}: prompt is {len(p)} tokens, max_length is {max_length}")
        c = c[: max_length - len(p)]
        feat = {"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c, "id": ex.id}
        if weighted:
            w = [1.0] * len(c)  # EOS (last) keeps weight 1
            for start, end, weight in ex.weights:
                for i, (a, b) in enumerate(enc["offset_mapping"][: len(c)]):
                    if a < end and b > start:
                        w[i] = weight
            feat["weights"] = [0.0] * len(p) + w
        feats.append(feat)
    return feats


def fit_pool(tokenizer, pool: list[SFTExample], fmt: str | PromptFormat, max_length: int) -> tuple[list[SFTExample], list[str]]:
    """Drop examples whose prompt alone leaves no room for an answer token in ``max_length``
    (before the seeded order is drawn, so the order stays a function of the seed and the data);
    returns (kept, dropped ids) so the caller can say how many went."""
    lengths = [len(ids) for ids in encode_prompts(tokenizer, [e.prompt for e in pool], fmt)]
    kept = [e for e, n in zip(pool, lengths) if n < max_length]
    return kept, [e.id for e, n in zip(pool, lengths) if n >= max_length]


def fit_pool_or_warn(tokenizer, pool: list[SFTExample], fmt: str | PromptFormat, max_length: int,
                     what: str = "training example") -> list[SFTExample]:
    """:func:`fit_pool` that says what it left out (every trainer drops over-long prompts the same way)."""
    import warnings

    kept, dropped = fit_pool(tokenizer, pool, fmt, max_length)
    if dropped:
        warnings.warn(f"{len(dropped)} {what}(s) have a prompt of max_length={max_length} tokens or more and were "
                      f"left out (e.g. {dropped[0]!r})", stacklevel=3)
    return kept


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
    if any("weights" in f for f in features):
        w = torch.zeros((len(features), width))  # (B, T): loss weight of the token at each position
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            w[i, :n] = torch.tensor(f["weights"]) if "weights" in f else 1.0
        batch["loss_weights"] = w
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}


def ordered_examples(pool: list[SFTExample], n: int, seed: int) -> list[SFTExample]:
    """The exact sequence of ``n`` training examples for a seed: seeded shuffles of the pool, one
    epoch after another (the members of a ``group`` move together). The trainer reads it
    sequentially, so the data order is a pure function of (pool, seed), testable and identical on
    resume."""
    if not pool:
        raise ValueError("training data is empty")
    rng = random.Random(f"tamperlab-order:{seed}")
    units: list[list[SFTExample]] = []  # a group (in pool order) or a lone example; shuffled as one
    where: dict[str, int] = {}
    for e in pool:
        if e.group and e.group in where:
            units[where[e.group]].append(e)
        else:
            if e.group:
                where[e.group] = len(units)
            units.append([e])
    out: list[SFTExample] = []
    while len(out) < n:
        epoch = list(units)
        rng.shuffle(epoch)  # with no groups: the same permutation as shuffling the examples
        out += [e for u in epoch for e in u]
    return out[:n]


def ordered_items(items: list, n: int, seed: int) -> list:
    """``ordered_examples`` for items that are not examples (preference pairs): the same seeded
    order, over stand-ins that carry each item's index."""
    ids = ordered_examples([SFTExample(str(i), "", "") for i in range(len(items))], n, seed)
    return [items[int(e.id)] for e in ids]
