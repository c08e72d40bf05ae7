"""Settings of an iterative method as one frozen dataclass whose fields carry their CLI options.

    @dataclasses.dataclass(frozen=True)
    class ToySettings(DriverSettings):
        steps: int = 50                                   # a new default for a driver field
        lr: float = option(0.1, "step size", min=0, min_exclusive=True, max=10)

Every field declared with :func:`option` is a method option (``--lr``: help, range and choices from the
field); a driver field redeclared with a plain default keeps the driver's option with the new default, and
one redeclared with :func:`hidden` keeps its checks but leaves the command line (DC draws its own batches:
no ``--sampler``); ``option(..., cli=False)`` declares a field the run fills (``reg`` from ``--reg``,
``val_size`` from ``--val-size``). A field with neither is a registration error. :func:`settings_options`
turns the class into registry options and :func:`check_settings` checks a settings object against them
(the validator of the CLI's values, :func:`kdistill._values.convert_value`, for Python's too).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable

from .._registry import Option

__all__ = ["option", "hidden", "settings_options", "check_settings", "method_fields"]

_KEY = "kdistill_option"
_HIDDEN = "hidden"


@dataclasses.dataclass(frozen=True)
class _Meta:
    help: str
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple | Callable[[], tuple] | None = None
    flag: str | None = None
    cli: bool = True


def option(default: Any, help: str = "", *, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False, choices: tuple | Callable[[], tuple] | None = None, flag: str | None = None,
           cli: bool = True) -> Any:
    """A settings field with its option's help, inclusive range (``min_exclusive``: strict lower bound),
    choices (a tuple, or a function returning one: resolved when options are listed or checked, so a
    name registered later still counts), CLI ``flag`` (default ``--field-name``), or ``cli=False``."""
    meta = _Meta(help, min, max, min_exclusive, choices, flag, cli)
    return dataclasses.field(default=default, metadata={_KEY: meta})


def hidden(default: Any) -> Any:
    """A base class's field with a new default, kept off the command line (its checks stay)."""
    return dataclasses.field(default=default, metadata={_KEY: _HIDDEN})


def _meta(cls: type, name: str) -> _Meta | None:
    """The option metadata of field ``name``: its own, or the nearest base class's (a redeclared default;
    :func:`hidden` takes the base's with ``cli=False``)."""
    hide = False
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and _KEY in f.metadata:
            if f.metadata[_KEY] == _HIDDEN:
                hide = True
                continue
            return dataclasses.replace(f.metadata[_KEY], cli=False) if hide else f.metadata[_KEY]
    return None


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _value_type(hint: Any) -> type:
    """``int`` for ``int`` and ``int | None``; likewise float, bool, str, Path."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in args if a is not type(None)]
        if len(args) != 1:
            raise RuntimeError(f"a settings field must have one value type (or that type | None), not {hint}")
        hint = args[0]
    if hint not in (int, float, bool, str, Path):
        raise RuntimeError(f"a settings field must be int, float, bool, str or Path (or that | None), not {hint}")
    return hint


def settings_options(cls: type) -> tuple[Option, ...]:
    """The registry options of a settings dataclass, in field order (driver fields first). Raises
    ``RuntimeError`` for a field declared without :func:`option` (it would be in the resume fingerprint and on
    no command line)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = _meta(cls, f.name)
        if meta is None:
            raise RuntimeError(f"{cls.__name__}.{f.name} is declared without option(...): give its help and range, "
                               "or option(default, cli=False) for a value the run fills")
        if not meta.cli:
            continue
        out.append(Option(f.name, _value_type(hints[f.name]), f.default, meta.help, min=meta.min, max=meta.max,
                          min_exclusive=meta.min_exclusive, choices=meta.choices, flag=meta.flag))
    return tuple(out)


def check_settings(settings: Any, method: str) -> None:
    """Check every field of ``settings`` (type, range, choices) as the CLI checks a given value; one-line
    :class:`~kdistill.errors.InvalidInputError` naming the flag (the field's name for one off the command
    line). ``None`` passes only where the field's type allows it."""
    cls = type(settings)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = _meta(cls, f.name)
        value = getattr(settings, f.name)
        if meta is None or (value is None and _optional(hints[f.name])):
            continue
        flag = meta.flag if meta.cli else f.name
        Option(f.name, _value_type(hints[f.name]), None, meta.help, min=meta.min, max=meta.max,
               min_exclusive=meta.min_exclusive, choices=meta.choices, flag=flag).convert(method, value)


def method_fields(settings: Any, base: type) -> dict[str, Any]:
    """The fields of ``settings`` that ``base`` (the driver's settings) does not have: the method's own."""
    own = {f.name for f in dataclasses.fields(base)}
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in own}
