"""Settings of an iterative method as one frozen dataclass whose fields carry their CLI options.

    @dataclasses.dataclass(frozen=True)
    class ToySettings(DriverSettings):
        steps: int = 50                                   # a new default for a driver field
        lr: float = option(0.1, "step size", min=0, min_exclusive=True, max=10)

Every field declared with :func:`option` is a method option (``--lr``: help, range and choices from the
field); a driver field redeclared with a plain default keeps the driver's option with the new default;
``option(..., cli=False)`` keeps a field off the command line (the run fills it: ``reg`` from ``--reg``,
``val_size`` from ``--val-size``). :func:`settings_options` turns the class into registry options and
:func:`check_settings` checks a settings object against them (one validator for the CLI and Python).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable

from .._registry import Option

__all__ = ["option", "settings_options", "check_settings", "method_fields"]

_KEY = "kdistill_option"


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


def _meta(cls: type, name: str) -> _Meta | None:
    """The option metadata of field ``name``: its own, or the nearest base class's (a redeclared default)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and _KEY in f.metadata:
            return f.metadata[_KEY]
    return None


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
    """The registry options of a settings dataclass, in field order (driver fields first)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = _meta(cls, f.name)
        if meta is None or not meta.cli:
            continue
        out.append(Option(f.name, _value_type(hints[f.name]), f.default, meta.help, min=meta.min, max=meta.max,
                          min_exclusive=meta.min_exclusive, choices=meta.choices, flag=meta.flag))
    return tuple(out)


def check_settings(settings: Any, method: str) -> None:
    """Check every option field of ``settings`` (type, range, choices) as the CLI checks a given value;
    one-line :class:`~kdistill.errors.InvalidInputError` naming the flag."""
    cls = type(settings)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = _meta(cls, f.name)
        value = getattr(settings, f.name)
        if meta is None or value is None:
            continue
        Option(f.name, _value_type(hints[f.name]), None, meta.help, min=meta.min, max=meta.max,
               min_exclusive=meta.min_exclusive, choices=meta.choices, flag=meta.flag).convert(method, value)


def method_fields(settings: Any, base: type) -> dict[str, Any]:
    """The fields of ``settings`` that ``base`` (the driver's settings) does not have: the method's own."""
    own = {f.name for f in dataclasses.fields(base)}
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in own}
