"""The configuration's error type and the field check every section uses."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what is valid."""


def _require(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {valid}")
