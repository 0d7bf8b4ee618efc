"""Number formats the docs use, in one place so a table and the prose cite a value identically."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from statistics import mean


def _round(x: float, places: int) -> Decimal:
    # repr(round(x, 6)) first: 0.1 + 0.2 style float noise must not decide a half-up rounding
    return Decimal(repr(round(float(x), 6))).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def f2(x: float, places: int = 2) -> str:
    """Fixed decimals, with the typographic minus the docs use."""
    return str(_round(x, places)).replace("-", "−")


def signed(x: float, places: int = 2) -> str:
    s = f2(x, places)
    return s if s.startswith("−") else "+" + s


def mmm(values: Iterable[float], places: int = 2) -> str:
    """``mean [min, max]`` over seeds, the docs' one way of showing a seed spread."""
    v = list(values)
    return f"{f2(mean(v), places)} [{f2(min(v), places)}, {f2(max(v), places)}]"


def mmm_of(c: dict, places: int = 2) -> str:
    """The same ``mean [min, max]`` from an already aggregated ``{"mean", "min", "max"}``."""
    return f"{f2(c['mean'], places)} [{f2(c['min'], places)}, {f2(c['max'], places)}]"


def pct(x: float) -> str:
    return f"{_round(x * 100, 0)}%"


def num(x: object) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def rk(c: dict) -> str:
    """A rate with its counts: ``0.68 (169/250)``."""
    return f"{f2(c['rate'])} ({c['k']}/{c['n']})"


def and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def layer_runs(layers: list[int]) -> str:
    """``[8, 9, 10, 11, 12, 22]`` -> ``8–12 and 22``."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return and_list([f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs])


def table(header: list[str], rows: list[list[str]], sources: list[str], note: str = "") -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    files = ", ".join(f"`{s}`" for s in sources)
    out += ["", f"*{note}Rendered from {files} by `scripts/render_docs.py` (not typed: re-render, do not edit).*"]
    return "\n".join(out) + "\n"


def contrast_cell(c: dict) -> str:
    return f"{signed(c['mean'])} [{signed(c['min'])}, {signed(c['max'])}]"
