"""Prompt formats are data (``formats/*.yaml``), resolved with single inheritance, so a new
format is a three-line file, not a branch in code (the lm-eval task-config pattern)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

FORMAT_DIR = Path(__file__).parent / "formats"
_KEYS = {"inherits", "kind", "system", "template"}


@dataclass(frozen=True)
class PromptFormat:
    name: str
    kind: str  # "chat" (tokenizer template) or "plain" (python format string)
    system: str | None = None
    template: str = "{prompt}"


def list_formats() -> list[str]:
    return sorted(p.stem for p in FORMAT_DIR.glob("*.yaml"))


@lru_cache(maxsize=None)
def get_format(name: str | PromptFormat) -> PromptFormat:
    if isinstance(name, PromptFormat):
        return name
    chain: list[dict] = []
    cur, seen = name, set()
    while cur:
        if cur in seen:
            raise ValueError(f"prompt format {name!r}: inheritance cycle through {cur!r}")
        seen.add(cur)
        path = FORMAT_DIR / f"{cur}.yaml"
        if not path.exists():
            raise ValueError(f"unknown prompt format {cur!r}; known: {', '.join(list_formats())}")
        data = yaml.safe_load(path.read_text()) or {}
        if bad := set(data) - _KEYS:
            raise ValueError(f"{path}: unknown key(s) {sorted(bad)}; allowed: {sorted(_KEYS)}")
        chain.append(data)
        cur = data.get("inherits")
    merged: dict = {}
    for data in reversed(chain):  # parent first, child overrides
        merged.update({k: v for k, v in data.items() if k != "inherits"})
    if merged.get("kind") not in ("chat", "plain"):
        raise ValueError(f"prompt format {name!r}: kind must be 'chat' or 'plain'")
    return PromptFormat(name=name, kind=merged["kind"], system=merged.get("system"),
                        template=merged.get("template", "{prompt}"))


def format_prompt(tokenizer, prompt: str, fmt: str | PromptFormat = "chat") -> str:
    """The exact text the model sees before its answer (generation prompt included)."""
    f = get_format(fmt)
    if f.kind == "plain":
        return f.template.format(prompt=prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"prompt format {f.name!r} needs a chat template, and this tokenizer has "
                         "none; use --format plain")
    msgs = ([{"role": "system", "content": f.system}] if f.system else []) + [
        {"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, prompts: list[str], fmt: str | PromptFormat = "chat") -> list[list[int]]:
    """Token ids per prompt, with exactly one BOS where the model uses one.

    Chat templates usually write the BOS text themselves, so those are encoded without special
    tokens; plain prompts get the tokenizer's own special tokens. Either way a doubled BOS is
    collapsed (it silently shifts a model's behaviour)."""
    f = get_format(fmt)
    texts = [format_prompt(tokenizer, p, f) for p in prompts]
    enc = tokenizer(texts, add_special_tokens=(f.kind == "plain"))["input_ids"]
    bos = tokenizer.bos_token_id
    out = []
    for ids in enc:
        ids = list(ids)
        while bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        out.append(ids)
    return out
