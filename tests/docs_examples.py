"""Run the Python blocks of a docs section, so the worked examples in docs/ are code that works."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def section_code(doc: str, heading: str) -> str:
    text = (DOCS / doc).read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end != -1 else None]
    return "\n".join(re.findall(r"```python\n(.*?)```", body, flags=re.S))


def load_section(doc: str, heading: str, name: str) -> types.ModuleType:
    """Execute the section's code as module ``name`` (its functions get that __module__)."""
    mod = types.ModuleType(name)
    sys.modules[name] = mod  # dataclasses look their module up
    exec(compile(section_code(doc, heading), f"{doc}#{heading}", "exec"), mod.__dict__)
    return mod
