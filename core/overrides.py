"""Config values from text: the one parser of `--set KEY=VALUE` (python -m core, study.run, the benchmarks) and of
MLflow's param strings (analysis), typed by TrainConfig's annotations, so `--set metric_epochs=0,40` means the same
everywhere. Torch-free: analysis imports it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Iterable
from typing import Any

from core.config import ConfigError, TrainConfig

_INT = re.compile(r"[+-]?\d+")
_NONE = ("none", "null")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a config key holds: bool, int, float, str, or a list of ints; `optional` when None is allowed."""

    base: type
    optional: bool
    sequence: bool = False

    def describe(self) -> str:
        name = (
            "a list of integers (e.g. 0,80,120)"
            if self.sequence
            else {bool: "true or false", int: "an integer", float: "a number", str: "text"}[self.base]
        )
        return name + (" or none" if self.optional else "")


@functools.cache
def kinds() -> dict[str, Kind]:
    """Every config key's Kind, read from TrainConfig's annotations."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for field in dataclasses.fields(TrainConfig):
        hint = hints[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        if typing.get_origin(hint) is tuple:
            out[field.name] = Kind(int, False, sequence=True)
        else:
            out[field.name] = Kind(args[0] if optional else hint, optional)
    return out


def infer_value(text: Any) -> Any:
    """A value of a key that is not a config key (a space's `variant`, `beta_neg_multiple`): None, a boolean, an
    integer, a number, or the text itself ('[20, 30]' stays text)."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in _NONE:
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.fullmatch(text.strip()):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_value(key: str, text: Any) -> Any:
    """`text` as config key `key` holds it: 'none' → None where allowed (a str key keeps 'none': the clip mode),
    'true'/'True'/'yes' → True, '3' → 3, '1e3' → 1000 for an integer key, '0,40' / '[0, 40]' / '' → a list of
    ints. Raises ConfigError naming the key, the text and what it takes. Other keys: `infer_value`."""
    kind = kinds().get(key)
    if kind is None or not isinstance(text, str):
        return infer_value(text) if kind is None else text
    stripped = text.strip()
    if kind.optional and stripped.lower() in _NONE:
        return None
    try:
        if kind.sequence:
            return [_integer(part) for part in stripped.strip("[]()").split(",") if part.strip()]
        if kind.base is bool:
            if stripped.lower() in _TRUE + _FALSE:
                return stripped.lower() in _TRUE
            raise ValueError
        if kind.base is int:
            return _integer(stripped)
        if kind.base is float:
            return float(stripped)
    except ValueError:
        raise ConfigError(f"{key}={text!r}: {key} takes {kind.describe()}") from None
    return stripped


def _integer(text: str) -> int:
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    number = float(text)  # '1e3'
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


def parse_assignment(item: str) -> tuple[str, Any]:
    """'KEY=VALUE' → (key, typed value)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r} is not KEY=VALUE")
    return key.strip(), parse_value(key.strip(), value)


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Repeated --set KEY=VALUE as a dict; a later value of a key wins."""
    return dict(parse_assignment(item) for item in items)
