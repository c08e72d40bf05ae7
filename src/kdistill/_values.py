"""Typed values that users give, as CLI/spec strings or Python values: one converter and its message helpers.

:func:`convert_value` turns ``"7"``, ``"on"``, ``numpy.float32(0.5)``, ... into the Python value of a declared
type and checks its range and choices, raising a one-line :class:`ValueCheckError` (an
:class:`~kdistill.errors.InvalidInputError`). Method options (``--steps 7``) and kernel spec parameters
(``rbf:gamma=0.01``) both go through it, so they accept and refuse the same values; a caller with its own
wording (kernel specs) words the error from its ``reason``.

>>> convert_value("5", int, where="method 'kip': --steps", min=1, max=10)
5
>>> convert_value("Off", bool, where="x")
False
>>> convert_value("12", int, where="method 'kip': --steps", min=1, max=10)
Traceback (most recent call last):
...
kdistill._values.ValueCheckError: method 'kip': --steps must be >= 1 and <= 10, got 12
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InvalidInputError

__all__ = ["convert_value", "ValueCheckError", "TRUE_WORDS", "FALSE_WORDS", "show_value", "type_name",
           "format_bound", "range_text", "describe_range"]

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
"""The words a boolean may be given as (case-insensitive, surrounding spaces ignored)."""


class ValueCheckError(InvalidInputError):
    """A value :func:`convert_value` refuses. The message is one line; ``reason`` says why, for callers that
    word it their own way: ``"type"`` (not of the type), ``"overflow"`` (a number too large for a float),
    ``"finite"`` (NaN or inf), ``"range"`` (outside min/max) or ``"choices"`` (not one of them)."""

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason


def show_value(value: Any) -> str:
    """A value as messages show it: its ``repr``, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def type_name(t: type) -> str:
    """``int`` -> ``"an integer"``, ``float`` -> ``"a number"``, ... for messages."""
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}.get(
        t, t.__name__)


def format_bound(x: float) -> str:
    """A bound as listings show it: integers in full (a seed's 4294967295), floats as ``:g``."""
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else f"{x:g}"


def range_text(min: float | None = None, max: float | None = None, min_exclusive: bool = False, *,
               number: Callable[[float], str] = lambda x: f"{x:g}") -> str:
    """What a number must be, for messages: ``">= 1 and <= 5"``, ``"> 0"``; ``"valid"`` without bounds.
    ``number`` formats each bound."""
    parts = []
    if min is not None:
        parts.append(f"{'>' if min_exclusive else '>='} {number(min)}")
    if max is not None:
        parts.append(f"<= {number(max)}")
    return " and ".join(parts) or "valid"


def describe_range(min: float | None = None, max: float | None = None, min_exclusive: bool = False) -> str:
    """A range for listings, compact: ``"0..100"``, ``"(0, 2]"``, ``">=1"``, ``"<=5"``; ``""`` without bounds."""
    if min is not None and max is not None:
        return (f"({format_bound(min)}, {format_bound(max)}]" if min_exclusive
                else f"{format_bound(min)}..{format_bound(max)}")
    if min is not None:
        return f"{'>' if min_exclusive else '>='}{format_bound(min)}"
    if max is not None:
        return f"<={format_bound(max)}"
    return ""


def convert_value(value: Any, type_: type, *, where: str, min: float | None = None, max: float | None = None,
                  min_exclusive: bool = False,
                  choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None) -> Any:
    """``value`` (a CLI/spec string or a Python value) as a checked value of ``type_``.

    Args:
      value: the value given. NumPy scalars count as the Python ones; arrays of one or more dimensions are refused.
      type_: ``bool`` (a bool, or one of :data:`TRUE_WORDS` / :data:`FALSE_WORDS`, any case), ``int`` (no
        floats, not even 3.0, no bools), ``float`` (no bools; finite), ``Path`` or ``str`` (a string as given).
      where: what the value is, starting the message: ``"method 'kip': --steps"``.
      min, max: inclusive bounds for ``int`` and ``float``; ``min_exclusive`` makes ``min`` strict.
      choices: allowed values, or a function without arguments that returns them (called now).

    Raises :class:`ValueCheckError` (an :class:`~kdistill.errors.InvalidInputError`), one line, checking
    in this order: ``"{where} must be an integer, got 1.5"``, ``"{where} must be a finite number, got nan"``,
    ``"{where} must be >= 1 and <= 5, got 9.0"``, ``"{where} must be one of a, b, got 'x'"``.
    """
    t = type_
    if isinstance(value, np.generic):  # numpy scalars behave as the Python ones
        value = value.item()
    try:
        if t is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in TRUE_WORDS + FALSE_WORDS:
                    raise ValueError(value)
                value = low in TRUE_WORDS
            elif not isinstance(value, bool):
                raise ValueError(value)
        elif t is int:
            if isinstance(value, (bool, float)) or getattr(value, "ndim", 0) != 0:
                raise ValueError(value)
            value = int(value.strip()) if isinstance(value, str) else int(value)
        elif t is float:
            # an array of one element would convert (NumPy deprecates it): refused as the list it is
            if isinstance(value, bool) or getattr(value, "ndim", 0) != 0:
                raise ValueError(value)
            value = float(value)
        elif t is Path:
            value = Path(value)
        elif not isinstance(value, str):
            raise ValueError(value)
    except OverflowError:  # an int too large for a float
        raise ValueCheckError(f"{where} must be {type_name(t)}, got {show_value(value)}", reason="overflow") from None
    except (TypeError, ValueError):
        raise ValueCheckError(f"{where} must be {type_name(t)}, got {show_value(value)}", reason="type") from None
    if t in (int, float):
        if t is float and not math.isfinite(value):
            raise ValueCheckError(f"{where} must be a finite number, got {show_value(value)}", reason="finite")
        low_ok = min is None or (value > min if min_exclusive else value >= min)
        if not low_ok or (max is not None and value > max):
            raise ValueCheckError(f"{where} must be {range_text(min, max, min_exclusive)}, got {show_value(value)}",
                                  reason="range")
    if callable(choices):
        choices = choices()
    if choices is not None and value not in choices:
        raise ValueCheckError(f"{where} must be one of {', '.join(map(str, choices))}, got {show_value(value)}",
                              reason="choices")
    return value
