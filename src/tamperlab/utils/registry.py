"""One registry keyed by name, config class attached (the PEFT ``register_peft_method`` pattern).

Models, datasets, judges, evaluation suites and (later) attacks and defenses each get a Registry,
so adding one is registering a class, never editing an if-chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    config_cls: type | None
    help: str


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, obj: T | None = None, *, config_cls: type | None = None,
                 help: str = "") -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        def _do(o: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = help or (o.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, o, config_cls, doc)
            return o
        return _do(obj) if obj is not None else _do

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]


Factory = Callable[..., Any]
