"""Generation cache keyed by content: weights fingerprint + exact prompt text + decoding params.

Append-only JSONL per model fingerprint; a crash mid-write loses at most the batch in flight.
Content keys mean a renamed model, or another output directory, still hits the cache.

Memory is bounded by the number of keys, not the text: the index holds each key's byte offset
in the file and a hit reads its one line back (a study's cache grows with every checkpoint of
every seed; holding all completions in memory grew with it)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils.hashing import stable_hash
from ..utils.paths import cache_dir


class GenerationCache:
    def __init__(self, fingerprint: str, root: Path | None = None):
        self.path = (root or cache_dir() / "generations") / f"{fingerprint}.jsonl"
        self._offset: dict[str, int] = {}
        if self.path.exists():
            with self.path.open("rb") as f:
                pos = 0
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # torn write (crash mid-append): skipped
                    try:
                        self._offset[json.loads(line)["key"]] = pos
                    except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                        pass
                    pos += len(line)

    @staticmethod
    def key(prompt_text: str, params: dict) -> str:
        return stable_hash({"prompt": prompt_text, **params}, n=32)

    def get(self, key: str) -> str | None:
        pos = self._offset.get(key)
        if pos is None:
            return None
        with self.path.open("rb") as f:
            f.seek(pos)
            return json.loads(f.readline())["completion"]

    def put_many(self, items: dict[str, str]) -> None:
        """Append whole lines in one O_APPEND write and fsync, then index them. Other processes
        may append to the same file (parallel workers): the write's own end offset locates it."""
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [(k, (json.dumps({"key": k, "completion": v}, ensure_ascii=False) + "\n").encode("utf-8"))
                 for k, v in items.items()]
        data = b"".join(d for _, d in lines)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
            pos = os.lseek(fd, 0, os.SEEK_CUR) - len(data)
        finally:
            os.close(fd)
        for k, d in lines:
            self._offset[k] = pos
            pos += len(d)

    def __len__(self) -> int:
        return len(self._offset)
