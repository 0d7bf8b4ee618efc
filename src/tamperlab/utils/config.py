"""Dataclass configs that are at once Python API, CLI flags and YAML (the TRL pattern).

Each field carries ``metadata={"help": ...}``; :func:`click_options` turns the fields into click
options and :func:`load_config` reads YAML, rejecting unknown keys and bad values by name.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import click
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


def coerce(cls: type, name: str, value: Any, source: str = "") -> Any:
    """Coerce ``value`` to the declared type of field ``name``, or raise a ConfigError naming it."""
    hints = typing.get_type_hints(cls)
    tp = _base_type(hints[name])
    where = f" in {source}" if source else ""
    if value is None:
        return None
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
                return [str(i).strip() for i in items if str(i).strip()]
            return items
    except (TypeError, ValueError):
        raise ConfigError(f"field {name!r}{where}: expected {getattr(tp, '__name__', tp)}, "
                          f"got {value!r}") from None
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


def click_options(cls: type, exclude: tuple[str, ...] = (), prefix: str = "", defaults: dict | None = None):
    """Decorator adding one ``--field-name`` option per dataclass field (default None = unset).

    ``prefix`` namespaces a second config on the same command (``prefix="eval"``: ``--eval-limit``
    -> parameter ``eval_limit``); ``defaults`` replaces the dataclass default shown in the help
    where the command applies its own."""
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}

    def deco(fn):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in exclude:
                continue
            tp = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            default = defaults.get(f.name, default)
            help_ = f.metadata.get("help", "")
            if default not in (None, [], ""):
                help_ += f" [default: {','.join(map(str, default)) if isinstance(default, list) else default}]"
            name = f"{prefix}_{f.name}" if prefix else f.name
            opt = "--" + name.replace("_", "-")
            ctype = {int: int, float: float, bool: click.BOOL}.get(tp, str)
            fn = click.option(opt, name, type=ctype, default=None, help=help_)(fn)
        return fn
    return deco
