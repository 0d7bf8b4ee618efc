"""User-supplied prompt/completion files (JSONL or CSV), with errors naming file, line and field."""
from __future__ import annotations

import csv
import json
from pathlib import Path


class DataFileError(ValueError):
    """A malformed data file; the message names the file, line and field."""


def read_rows_file(path: str | Path, required: tuple[str, ...] = ("prompt",)) -> list[dict]:
    """Rows of a ``.jsonl`` or ``.csv`` file; every required field must be a non-empty string.
    Other columns are kept as they are."""
    p = Path(path)
    if not p.exists():
        raise DataFileError(f"{p}: file not found")
    suffix = p.suffix.lower()
    rows: list[tuple[int, dict]] = []
    if suffix in (".jsonl", ".ndjson"):
        with p.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFileError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise DataFileError(f"{p}:{lineno}: each line must be a JSON object")
                rows.append((lineno, obj))
    elif suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataFileError(f"{p}:1: header has no {missing[0]!r} column "
                                    f"(columns: {', '.join(reader.fieldnames or [])})")
            rows = [(i, dict(r)) for i, r in enumerate(reader, 2)]
    else:
        raise DataFileError(f"{p}: unsupported extension {p.suffix!r}; use .jsonl or .csv")
    if not rows:
        raise DataFileError(f"{p}: no rows")
    out = []
    for lineno, r in rows:
        for field in required:
            v = r.get(field)
            if v is None:
                raise DataFileError(f"{p}:{lineno}: missing field {field!r}")
            if not isinstance(v, str) or not v.strip():
                raise DataFileError(f"{p}:{lineno}: field {field!r} must be a non-empty string")
        r.setdefault("id", f"{p.stem}-{lineno}")
        r["id"] = str(r["id"])
        out.append(r)
    return out
