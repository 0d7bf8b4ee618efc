"""Dataclass configs that are at once Python API, YAML and ``--set key=value`` overrides.

Each field carries ``metadata={"help": ...}`` (:func:`keys_help` lists them for a command's help);
:func:`from_dict` / :func:`load_config` check every value against its declared type (lists and
mappings included), rejecting unknown keys and bad values with one line naming the field.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """Bad configuration: the message names the field (and file, when there is one)."""


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return tp


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (list, tuple):
        elem = (typing.get_args(tp) or (str,))[0]
        return f"a list of {getattr(elem, '__name__', elem)} (YAML list or comma-separated)"
    return getattr(tp, "__name__", str(tp))


def coerce(cls: type, name: str, value: Any, source: str = "") -> Any:
    """Coerce ``value`` to the declared type of field ``name``, or raise a ConfigError naming it."""
    hints = typing.get_type_hints(cls)
    tp = _base_type(hints[name])
    where = f" in {source}" if source else ""
    if value is None:
        return None
    if tp is list and not isinstance(value, (list, tuple)):
        raise ConfigError(f"field {name!r}{where}: expected a list, got {value!r}")
    if (tp is dict or typing.get_origin(tp) is dict) and not isinstance(value, dict):
        raise ConfigError(f"field {name!r}{where}: expected a mapping (key: value), got {value!r}")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if tp in (int, float) and isinstance(value, bool):
                raise ValueError(value)
            return tp(value)
        if typing.get_origin(tp) in (list, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            elem = (typing.get_args(tp) or (str,))[0]
            if elem in (int, float):
                out = []
                for i in items:
                    if isinstance(i, bool) or (elem is int and isinstance(i, float) and not i.is_integer()):
                        raise ValueError(i)
                    if str(i).strip():
                        out.append(elem(str(i).strip()) if isinstance(i, str) else elem(i))
                return out
            if elem is str:
                if any(isinstance(i, (dict, list)) for i in items):
                    raise ValueError(value)
                return [str(i).strip() for i in items if str(i).strip()]
            return items
    except (TypeError, ValueError):
        raise ConfigError(f"field {name!r}{where}: expected {_type_name(tp)}, got {value!r}") from None
    return value


def from_dict(cls: type[C], data: dict, source: str = "") -> C:
    names = {f.name for f in dataclasses.fields(cls)}
    where = f" in {source}" if source else ""
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s){where}: {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(names))}")
    cfg = cls(**{k: coerce(cls, k, v, source) for k, v in data.items()})
    if hasattr(cfg, "validate"):
        try:
            cfg.validate()
        except ConfigError as e:
            if source and source not in str(e):
                raise ConfigError(f"{e}{where}") from None
            raise
    return cfg


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping; any problem is a ConfigError naming the file."""
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping of config keys")
    return loaded


def load_config(cls: type[C], path: str | Path | None, overrides: dict | None = None) -> C:
    """YAML file (optional) then explicit overrides (e.g. CLI flags that were set)."""
    data: dict = dict(read_yaml_mapping(path)) if path else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(cls, data, source=str(path) if path else "")


def parse_sets(pairs: tuple[str, ...] | list[str], option: str = "--set") -> dict:
    """``key=value`` pairs (values parsed as YAML: 1e-4, true, [q_proj, v_proj]); a dotted key sets a
    key of a nested mapping (``eval.limit=3`` -> ``{"eval": {"limit": 3}}``)."""
    out: dict = {}
    for p in pairs:
        k, eq, v = p.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"{option} {p!r}: write key=value")
        try:
            value = yaml.safe_load(v)
        except yaml.YAMLError:
            raise ConfigError(f"{option} {p!r}: the value is not valid YAML") from None
        *parents, leaf = [part.strip() for part in k.split(".")]
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{option} {p!r}: {part!r} is set to a value and used as a mapping")
        node[leaf] = value
    return out


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``; mappings merge key by key (so ``eval.limit`` keeps eval's other keys)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def keys_help(cls: type, title: str = "") -> str:
    """One line per config key (name, default, help), for a command's --help epilog."""
    lines = [title] if title else []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        lines.append(f"  {f.name} [{shown}]: {f.metadata.get('help', '')}".rstrip(": "))
    return "\b\n" + "\n".join(lines)
