"""Generation cache keyed by content: weights fingerprint + exact prompt text + decoding params.

Append-only JSONL per model fingerprint; a crash mid-write loses at most the batch in flight.
Content keys mean a renamed model, or another output directory, still hits the cache."""
from __future__ import annotations

from pathlib import Path

from ..utils.hashing import stable_hash
from ..utils.io import append_jsonl, read_jsonl_tolerant
from ..utils.paths import cache_dir


class GenerationCache:
    def __init__(self, fingerprint: str, root: Path | None = None):
        self.path = (root or cache_dir() / "generations") / f"{fingerprint}.jsonl"
        self._mem: dict[str, str] = {r["key"]: r["completion"] for r in read_jsonl_tolerant(self.path)}

    @staticmethod
    def key(prompt_text: str, params: dict) -> str:
        return stable_hash({"prompt": prompt_text, **params}, n=32)

    def get(self, key: str) -> str | None:
        return self._mem.get(key)

    def put_many(self, items: dict[str, str]) -> None:
        if not items:
            return
        append_jsonl(self.path, [{"key": k, "completion": v} for k, v in items.items()])
        self._mem.update(items)

    def __len__(self) -> int:
        return len(self._mem)
