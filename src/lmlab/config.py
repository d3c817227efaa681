"""Typed configs: YAML recipes and ``--section.field=value`` overrides → dataclasses.

Defaults and the meaning of each field live in the dataclass next to what it configures;
recipes hold overrides only. Loading is strict: an unknown key is an error that lists the
valid ones, a value of the wrong type is an error naming the dotted field, and each
dataclass's ``__post_init__`` validates ranges. The resolved config is dumped with every
artifact (`dump_config`) so that a run can be reproduced from its output directory alone:
what a stage records beyond its configuration (the stage, its data, the model it resolved to)
sits in a ``run:`` section, which `read_yaml` drops, so that ``--config OUT/model/config.yaml``
reruns the run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from lmlab.errors import ConfigError

T = TypeVar("T")
RUN_RECORD = "run"  # the section of a written config.yaml that records the run rather than configures it


def run_record(config: dict[str, Any], **record: Any) -> dict[str, Any]:
    """A resolved config to write with an artifact: `config` + ``run: {stage, ...}``."""
    return {**config, RUN_RECORD: record}


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a plain dict, recursively, rejecting unknown keys."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        moved = [k for k in unknown if k in getattr(cls, "moved", {})]  # a key that now sits in a section
        if moved:
            raise ConfigError("; ".join(f"{prefix}{k} is now {prefix}{cls.moved[k]}.{k}" for k in moved)
                              + " (in a recipe: under its section, e.g. " + f"{prefix}{cls.moved[moved[0]]}: "
                              + f"{{{moved[0]}: ...}})")
        raise ConfigError(
            f"unknown config key {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    hints = get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return value


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict of YAML/JSON-safe values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """``["--model.d_model=128", "train.lr=3e-4"]`` → nested dict, values typed by YAML."""
    nested: dict[str, Any] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} must look like --section.field=value")
        key, raw = text.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: values of `over` win; nested mappings merge."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    record = data.get(RUN_RECORD)
    if isinstance(record, dict) and "stage" in record:  # a config.yaml that lmlab wrote: its record is not config
        data.pop(RUN_RECORD)
    return data


def load_config(
    cls: type[T], recipe: str | Path | None = None, overrides: typing.Iterable[str] = ()
) -> T:
    """Dataclass defaults ← YAML recipe ← CLI overrides, strictly typed."""
    data = read_yaml(recipe) if recipe else {}
    data = merge(data, parse_overrides(overrides))
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{recipe}: {e}" if recipe else str(e)) from None


def dump_config(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def check(condition: bool, field: str, message: str) -> None:
    """Validation helper for `__post_init__`: raise a ConfigError naming the field."""
    if not condition:
        raise ConfigError(f"{field}: {message}")
