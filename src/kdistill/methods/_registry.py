"""The method registry: every distillation method registers its name, a one-line doc and typed options.

From a registration come the CLI's options and help (``kdistill distill --method NAME --help``),
option validation (unknown names, wrong types, out-of-range values: one-line
:class:`~kdistill.errors.InvalidInputError`), what ``run.json`` records, and ``kdistill methods``.
Adding a method is one module that calls :func:`register_method`:

>>> from kdistill.methods import Option, register_method, MethodOutput
>>> @register_method("doc-example", doc="the first ipc images of every class",
...                  options=[Option("shift", float, 0.0, "added to every pixel", min=-1.0, max=1.0)])
... def _first(ctx, opts):
...     ...
>>> resolve_options("doc-example", {"shift": "0.5"})
{'shift': 0.5}
>>> unregister_method("doc-example")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


from .._suggest import did_you_mean
from .._values import convert_value
from ..errors import InvalidInputError, SpecError

__all__ = ["Option", "Method", "register_method", "unregister_method", "methods", "get_method", "resolve_options",
           "cli_flags"]


@dataclasses.dataclass(frozen=True)
class Option:
    """One typed setting of a method.

    Attributes:
      name: Python name (``learn_labels``); the CLI flag is ``--learn-labels`` unless ``flag`` says otherwise.
      type: ``int``, ``float``, ``str``, ``bool`` (a CLI switch) or ``Path``.
      default: value when not given (``None``: absent unless given).
      help: one line for ``--help`` and ``kdistill methods``.
      min, max: inclusive bounds for numbers; ``min_exclusive`` makes ``min`` strict.
      choices: allowed values for strings: a tuple, or a function returning one (resolved each time the
        option is listed or checked, so an init or sampler registered after the method still counts).
      parse: for values that need more than a type (``"0.5xbound"``): ``parse(value) -> value``,
        raising :class:`InvalidInputError` with a one-line message.
      flag: CLI flag, e.g. ``"--clamp-lambda-s"``.
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None
    parse: Callable[[Any], Any] | None = None
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def allowed(self) -> tuple[Any, ...] | None:
        """The choices now (a function of choices is called)."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    def describe(self) -> str:
        """``help [default: x; >= 1]`` for listings."""
        extra = []
        if self.default is not None and self.type is not bool:
            extra.append(f"default: {self.default}")
        if self.allowed():
            extra.append("one of " + "|".join(map(str, self.allowed())))
        if self.min is not None:
            extra.append(f"{'>' if self.min_exclusive else '>='} {self.min:g}")
        if self.max is not None:
            extra.append(f"<= {self.max:g}")
        return self.help + (f" [{'; '.join(extra)}]" if extra else "")

    def convert(self, method: str, value: Any) -> Any:
        """Convert a CLI string or a Python value to this option's type and check its range and choices
        (:func:`kdistill._values.convert_value`, the validator kernel parameters use too)."""
        if self.parse is not None:
            return self.parse(value)
        return convert_value(value, self.type, where=f"method {method!r}: {self.cli_flag}", min=self.min,
                             max=self.max, min_exclusive=self.min_exclusive, choices=self.choices)


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method: ``run(ctx, options) -> MethodOutput`` plus what the CLI and docs need.

    ``iterative`` methods run on the iterative driver (checkpoints, ``--resume``, ``history.json``);
    ``settings`` is the frozen settings dataclass an iterative method was registered from
    (:func:`kdistill.methods.iterative.register_iterative`). ``smoke`` are small options (and
    ``smoke_kernel`` a small kernel spec) with which the method finishes in seconds on ``digits``: the
    contract tests run every registered method with them.
    """

    name: str
    doc: str
    options: tuple[Option, ...]
    run: Callable[..., Any]
    iterative: bool = False
    precision: str = "float64"  # what a run's precision "auto" means for this method
    kernel: str | None = None  # the kernel spec when none is given (None: the entry point's own default)
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    smoke_kernel: str | None = None
    settings: type | None = None

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)


_METHODS: dict[str, Method] = {}


RESERVED_FLAGS = frozenset({
    "--dataset", "--method", "--ipc", "--kernel", "--out", "--seed", "--preprocess", "--reg", "--full", "--no-full",
    "--max-dual-n", "--resume", "--precision", "--download", "--data-dir", "--help", "-h", "--time-limit", "--seeds",
    "--baseline", "--no-baseline", "--force", "--workers", "--scheduler", "--val-size"})
"""Flags of ``kdistill distill`` itself: no method option may take them."""


def register_method(name: str, *, doc: str, options: Iterable[Option] = (), iterative: bool = False,
                    precision: str = "float64", kernel: str | None = None, smoke: Mapping[str, Any] | None = None,
                    smoke_kernel: str | None = None, settings: type | None = None):
    """Decorator: register ``run(ctx: Context, options: dict) -> MethodOutput`` as method ``name``.

    Raises ``RuntimeError`` for a programming error in the registration: a duplicate name or option,
    a flag of ``kdistill distill`` itself, a flag another method uses for a different option or
    type, a bool option that defaults to True (a CLI switch can only turn it on), or a default its
    own option rejects.
    """
    opts = tuple(options)
    names = [o.name for o in opts]
    if len(set(names)) != len(names):
        raise RuntimeError(f"method {name!r}: an option is declared twice ({names})")

    def deco(run: Callable[..., Any]) -> Callable[..., Any]:
        if not isinstance(name, str) or not name or name in _METHODS:
            raise RuntimeError(f"method {name!r} registered twice or not a name")
        for o in opts:
            if o.cli_flag in RESERVED_FLAGS:
                raise RuntimeError(f"method {name!r}: option {o.name!r} would take {o.cli_flag}, a flag of "
                                   "kdistill distill itself")
            if o.type is bool and o.default:
                raise RuntimeError(f"method {name!r}: bool option {o.name!r} must default to False (a switch)")
            if o.default is not None:
                o.convert(name, o.default)  # a default its own option rejects is a bug
            for other in _METHODS.values():  # a flag shared by several methods means one thing
                for p in other.options:
                    if p.cli_flag == o.cli_flag and (p.name != o.name or (p.type is bool) != (o.type is bool)):
                        raise RuntimeError(f"method {name!r}: {o.cli_flag} is option {p.name!r} of "
                                           f"{other.name!r} with another name or type")
        if precision not in ("float64", "float32"):
            raise RuntimeError(f"method {name!r}: precision must be float64 or float32, not {precision!r}")
        for spec in (kernel, smoke_kernel):
            if spec is not None:
                from ..kernels import from_spec

                from_spec(spec)  # a default that does not parse is a bug
        unknown = sorted(set(smoke or {}) - set(names))
        if unknown:
            raise RuntimeError(f"method {name!r}: smoke options {unknown} are not its options")
        _METHODS[name] = Method(name, doc, opts, run, iterative, precision, kernel, dict(smoke or {}), smoke_kernel,
                                settings)
        return run

    return deco


def unregister_method(name: str) -> None:
    """Remove a method (tests and plug-ins that register temporary methods)."""
    _METHODS.pop(name, None)


def methods() -> dict[str, Method]:
    """Every registered method by name."""
    return dict(_METHODS)


def get_method(name: str) -> Method:
    if not isinstance(name, str) or name not in _METHODS:
        hint = did_you_mean(name, _METHODS) if isinstance(name, str) else None
        if hint:
            raise SpecError(f"unknown method {name!r}; {hint} (kdistill methods lists them)")
        raise SpecError(f"unknown method {name!r}; valid methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def resolve_options(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """All of ``method``'s options: ``given`` converted and checked, defaults for the rest.

    ``given`` maps option names (``learn_labels``) to CLI strings or Python values; unknown
    names raise a one-line error that lists the valid ones.
    """
    m = get_method(method)
    known = {o.name: o for o in m.options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        valid = ", ".join(sorted(known)) or "none"
        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else None
        raise InvalidInputError(f"method {method!r} has no option {', '.join(unknown)}; its options: {valid}"
                                + (f"; {hint}" if hint else ""))
    out: dict[str, Any] = {}
    for o in m.options:
        if o.name in given and given[o.name] is not None:
            out[o.name] = o.convert(method, given[o.name])
        elif o.default is not None:
            out[o.name] = o.default
    return out


def cli_flags() -> dict[str, Option]:
    """Every method option by CLI flag (the first registration of a shared flag describes it)."""
    flags: dict[str, Option] = {}
    for m in _METHODS.values():
        for o in m.options:
            flags.setdefault(o.cli_flag, o)
    return flags
