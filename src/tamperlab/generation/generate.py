"""Batched generation and next-token scoring on a loaded model.

Prompts are sorted by length and left-padded so each batch wastes little compute and every
sequence ends at the same position (what decoder-only generation needs); results come back in
the caller's order."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

from ..models.loading import LoadedModel
from ..prompts.formats import PromptFormat, encode_prompts, get_format
from ..utils.progress import progress
from .cache import GenerationCache


@contextmanager
def eval_mode(model):
    """Run a model that may be in training for inference: eval mode (no dropout), no gradients, and
    the global RNG forked so sampling here leaves training's random stream as it was; the training
    mode is restored on the way out."""
    was = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            yield model
    finally:
        model.train(was)


@dataclass
class GenerationConfig:
    max_new_tokens: int = field(default=128, metadata={"help": "tokens generated per prompt"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    seed: int = field(default=0, metadata={"help": "sampling seed (with a fixed batch size)"})
    batch_size: int = field(default=16, metadata={"help": "prompts per forward batch"})

    def cache_params(self) -> dict:
        d = asdict(self)
        d.pop("batch_size")
        if not self.do_sample:  # greedy output does not depend on these
            for k in ("temperature", "top_p", "seed"):
                d.pop(k)
        else:
            d["batch_size"] = self.batch_size  # sampled tokens depend on the batch's RNG stream
        return d


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def _stop_ids(lm: LoadedModel) -> list[int]:
    ids = set()
    for src in (lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(src)
    return sorted(ids)


def generate(lm: LoadedModel, prompts: list[str], fmt: str | PromptFormat = "chat",
             config: GenerationConfig | None = None, cache: GenerationCache | None = None,
             description: str = "generating", prefill: list[str] | None = None) -> list[str]:
    """Completions for ``prompts`` (in order). Cached ones are not regenerated.

    ``prefill[i]`` is text placed at the start of the model's turn (e.g. a scratchpad, or a
    prefilling attack's "Sure, here is"); the completion returned continues it and excludes it."""
    cfg = config or GenerationConfig()
    fmt = get_format(fmt)
    tok = lm.tokenizer
    encoded = encode_prompts(tok, prompts, fmt)
    if prefill is not None:
        if len(prefill) != len(prompts):
            raise ValueError(f"prefill: {len(prefill)} texts for {len(prompts)} prompts")
        encoded = [ids + (tok(p, add_special_tokens=False)["input_ids"] if p else [])
                   for ids, p in zip(encoded, prefill)]
    params = {"format": fmt.name, **cfg.cache_params()}
    keys = [GenerationCache.key(tok.decode(ids), params) for ids in encoded]
    out: list[str | None] = [cache.get(k) if cache is not None else None for k in keys]
    todo = sorted((i for i, o in enumerate(out) if o is None), key=lambda i: -len(encoded[i]))
    stop = _stop_ids(lm)
    pad = lm.pad_id
    with progress(description, len(todo)) as advance:
        for b, start in enumerate(range(0, len(todo), cfg.batch_size)):
            idx = todo[start:start + cfg.batch_size]
            ids, mask = _left_pad([encoded[i] for i in idx], pad, lm.device)
            kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                          eos_token_id=stop, pad_token_id=pad)
            if cfg.do_sample:
                torch.manual_seed(cfg.seed * 100003 + b)
                kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                gen = lm.model.generate(input_ids=ids, attention_mask=mask, **kwargs)  # (B, T+new)
            new = gen[:, ids.shape[1]:]
            fresh = {}
            for row, i in enumerate(idx):
                toks = new[row].tolist()
                for j, t in enumerate(toks):  # cut at the first stop token
                    if t in stop:
                        toks = toks[:j]
                        break
                out[i] = tok.decode(toks, skip_special_tokens=True).strip()
                fresh[keys[i]] = out[i]
            if cache is not None:
                cache.put_many(fresh)
            advance(len(idx))
    return [o for o in out]  # type: ignore[misc]


def score_next_token(lm: LoadedModel, prompts: list[str], candidates: list[list[int]],
                     fmt: str | PromptFormat = "chat", batch_size: int = 16,
                     description: str = "scoring") -> list[list[float]]:
    """Log-probability of each candidate next token after each prompt: one forward pass per prompt.

    ``candidates[c]`` lists token ids that all stand for answer c (e.g. "A" and " A"); the
    answer's score is the log-sum-exp over them."""
    fmt = get_format(fmt)
    encoded = encode_prompts(lm.tokenizer, prompts, fmt)
    pad = lm.pad_id
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[list[float]] = [[] for _ in prompts]
    with progress(description, len(prompts)) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = _left_pad([encoded[i] for i in idx], pad, lm.device)
            with torch.inference_mode():
                logits = lm.model(input_ids=ids, attention_mask=mask).logits[:, -1, :]  # (B, V)
            logp = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                out[i] = [torch.logsumexp(logp[row, c], dim=0).item() for c in candidates]
            advance(len(idx))
    return out
