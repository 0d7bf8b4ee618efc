"""Render the quoted tables and values in README.md and docs/*.md from the committed result files.

    python scripts/render_docs.py            # rewrite every marker in place
    python scripts/render_docs.py --check    # exit 1, listing each marker that differs

Markers and their sources: src/tamperlab/reports/quoted/ (blocks.py, values.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tamperlab.reports.quoted import QuoteError, check_paths, doc_paths

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if any marker differs")
    ap.add_argument("paths", nargs="*", type=Path, help="markdown files (default: README.md and docs/*.md)")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.paths] or doc_paths(ROOT)
    try:
        found = check_paths(paths, ROOT, write=not args.check)
    except QuoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for m in found:
        if args.check:
            print(m, file=sys.stderr)
        else:
            print(f"{m.path}:{m.line}: {m.name} re-rendered")
    if args.check and found:
        print(f"{len(found)} quoted block(s)/value(s) differ from their result files; "
              "run `python scripts/render_docs.py`", file=sys.stderr)
        return 1
    if not args.check:
        print(f"rendered {len(paths)} file(s), {len(found)} marker(s) updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
