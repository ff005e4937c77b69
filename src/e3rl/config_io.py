"""Reading configs: YAML files (with `base:`), dotted `key=value` overrides, type checks against
the dataclasses of `e3rl.config`, nearest-key suggestions, and the configuration reference.

`load_config("configs/demo.yaml", ["rollout.n=8"])` reads the YAML, applies the overrides, builds
the dataclasses and validates them. Every error is a `ConfigError` whose message names the key,
the value and what would be valid; unknown keys suggest the nearest valid one.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from e3rl.config import Config, ConfigError

# ----------------------------------------------------------------------------- loading


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"list[{_type_name(inner)}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks `value` against the annotation `tp` and converts the harmless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{key}={value!r} is invalid: expected one of "
                f"{', '.join(repr(c) for c in choices)}{hint}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}={value!r} is invalid: expected {_type_name(tp)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r} is invalid: expected {_type_name(tp)}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is invalid: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}={value!r} is invalid: expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r} is invalid: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is invalid: expected a string")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(_unknown_key_message(prefix, key, value, names))
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(f"{prefix}{key}", value, tp)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # Section checks raise with the bare field name; give it its full dotted key.
        raise ConfigError(f"{prefix}{e}") from None


def _leaf_paths(key: str, value: Any) -> list[str]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaf_paths(f"{key}.{k}", v)]
    return [key]


def _unknown_key_message(prefix: str, key: str, value: Any, names: list[str]) -> str:
    """Names the unknown key and suggests the nearest valid dotted key (typos in sections too)."""
    every = [k for k, *_ in describe(Config)]
    hint = ""
    for path in _leaf_paths(f"{prefix}{key}", value):
        close = difflib.get_close_matches(path, every, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean '{close[0]}'?"
            break
    else:
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return (
        f"unknown key '{prefix}{key}'{hint} (valid in this section: {', '.join(names)}; "
        "`e3rl config` lists every key)"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """'rollout.n=8' -> (['rollout', 'n'], 8). The value is parsed as YAML (so 1e-3, null, [1,2])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is invalid: expected key=value, e.g. rollout.n=8")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    path = Path(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"config file {path}: its base: chain is a cycle ({cycle})")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        why = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"config file {path}{where} is not valid YAML: {why}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {data!r}")
    base = data.pop("base", None)
    if base is not None:  # `base: other.yaml` (relative to this file): start from it
        if not isinstance(base, str):
            raise ConfigError(f"config file {path}: base={base!r} must be a file name")
        data = _merge(read_yaml(path.parent / base, (*_chain, path.resolve())), data)
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(data: dict) -> Config:
    return _build(Config, data, "").validate()


def split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    """The one argument without '=' is the config file; the others are overrides."""
    files = [a for a in items if "=" not in a]
    if len(files) > 1:
        raise ConfigError(f"expected at most one config file, got {files}; overrides are key=value")
    return (files[0] if files else None), [a for a in items if "=" in a]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Reads a YAML file (or starts from the defaults), applies `key=value` overrides, validates."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config, path: str | Path) -> None:
    """Writes the config as YAML, atomically: --resume reads it back, so a kill mid-write must not
    leave a torn file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


# ----------------------------------------------------------------------------- reference


def _field_docs(cls: type) -> dict[str, str]:
    """The string literal right under each field: the field's one-line documentation."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) for every leaf field: the configuration reference."""
    rows = []
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            rows += describe(tp, f"{prefix}{f.name}.")
        else:
            rows.append(
                (
                    f"{prefix}{f.name}",
                    _type_name(tp),
                    getattr(default, f.name),
                    docs.get(f.name, ""),
                )
            )
    return rows
