"""Find the markers in a page, re-render them, and report the ones whose committed text differs."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .blocks import BLOCKS
from .sources import QuoteError, Results
from .values import facts

_OPEN = re.compile(r"^<!-- quoted:([\w.-]+) -->[ \t]*$", re.M)
# a marker right after a backtick is an example in a code span, not a value
_INLINE = re.compile(r"(?<!`)<!-- q:([^ >]+) -->(.*?)<!-- /q -->", re.S)


@dataclass
class Mismatch:
    """One marker whose committed text is not what its result file gives."""

    path: str
    line: int
    name: str
    committed: str
    rendered: str

    def __str__(self) -> str:
        if not self.name.startswith("block "):
            return (f"{self.path}:{self.line}: {self.name}: committed {self.committed!r}, "
                    f"result file gives {self.rendered!r}")
        diff = difflib.unified_diff(self.committed.splitlines(), self.rendered.splitlines(),
                                    "committed", "from result files", lineterm="", n=0)
        return f"{self.path}:{self.line}: {self.name} differs:\n" + "\n".join("    " + d for d in diff)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def render_text(text: str, r: Results, path: str = "<text>") -> tuple[str, list[Mismatch]]:
    """The text with every marker re-rendered, and the markers whose committed text differed."""
    mismatches: list[Mismatch] = []
    out, pos = [], 0
    for m in _OPEN.finditer(text):
        if m.start() < pos:
            raise QuoteError(f"{path}:{_line(text, m.start())}: quoted block {m.group(1)!r} opens inside another block")
        name = m.group(1)
        close = f"<!-- /quoted:{name} -->"
        end = text.find(close, m.end())
        if end < 0:
            raise QuoteError(f"{path}:{_line(text, m.start())}: quoted block {name!r} has no {close}")
        if name not in BLOCKS:
            raise QuoteError(f"{path}:{_line(text, m.start())}: unknown quoted block {name!r} "
                             f"(known: {', '.join(sorted(BLOCKS))})")
        body = text[m.end() + 1:end]
        fresh = BLOCKS[name](r)
        if body != fresh:
            mismatches.append(Mismatch(path, _line(text, m.start()), f"block {name}", body, fresh))
        out += [text[pos:m.end() + 1], fresh]
        pos = end
    out.append(text[pos:])
    text = "".join(out)

    values: dict[str, str] | None = None

    def inline(m: re.Match) -> str:
        nonlocal values
        if values is None:
            values = facts(r)
        key, committed = m.group(1), m.group(2)
        if key not in values:
            near = sorted(k for k in values if k.startswith(key.rsplit(".", 1)[0]))[:8]
            raise QuoteError(f"{path}:{_line(text, m.start())}: unknown quoted value {key!r}"
                             + (f" (similar: {', '.join(near)})" if near else ""))
        if committed != values[key]:
            mismatches.append(Mismatch(path, _line(text, m.start()), f"value {key}", committed, values[key]))
        return f"<!-- q:{key} -->{values[key]}<!-- /q -->"

    for c in re.finditer(r"^<!-- /quoted:([\w.-]+) -->", text, re.M):
        if not re.search(rf"^<!-- quoted:{re.escape(c.group(1))} -->", text[:c.start()], re.M):
            raise QuoteError(f"{path}:{_line(text, c.start())}: closing marker for {c.group(1)!r} "
                             "without an opening one")
    text = _INLINE.sub(inline, text)
    _no_malformed_markers(text, path)
    return text, mismatches


_ANY_MARKER = re.compile(r"<!--\s*/?\s*(?:q|quoted)\b", re.I)


def _no_malformed_markers(text: str, path: str) -> None:
    """A marker broken by re-wrapping (``<!--`` and ``q:`` on two lines) would be skipped, not checked."""
    rest = _INLINE.sub(lambda m: " " * len(m.group(0)), text)
    rest = re.sub(r"^<!-- /?quoted:[\w.-]+ -->[ \t]*$", lambda m: " " * len(m.group(0)), rest, flags=re.M)
    rest = re.sub(r"`<!-- q:[^`]*`", lambda m: " " * len(m.group(0)), rest)  # examples in code spans
    bad = _ANY_MARKER.search(rest)
    if bad:
        raise QuoteError(f"{path}:{_line(text, bad.start())}: malformed quoted marker "
                         f"{text[bad.start():bad.start() + 40]!r} (want '<!-- q:KEY -->VALUE<!-- /q -->' on one line, "
                         "or '<!-- quoted:NAME -->' alone on a line)")


def doc_paths(root: Path | str) -> list[Path]:
    """README.md and docs/*.md: the hand-written pages (the copied study reports are tool output)."""
    root = Path(root)
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def check_paths(paths: Iterable[Path], root: Path | str, write: bool = False) -> list[Mismatch]:
    """Every marker in ``paths`` that differs from its result file; ``write`` rewrites them in place."""
    r = Results(root)
    root = Path(root)
    found: list[Mismatch] = []
    for p in paths:
        text = p.read_text(encoding="utf-8")
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        fresh, mism = render_text(text, r, rel)
        found += mism
        if write and fresh != text:
            p.write_text(fresh, encoding="utf-8")
    return found
