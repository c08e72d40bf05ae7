"""The kernel object, the registry of kernel families and spec-string parsing.

A spec string names a kernel family and optional parameters:
``"rbf:gamma=0.01"``, ``"fc-ntk:depth=3,w_std=1.4142"``, ``"linear"``.
Both the CLI and :func:`from_spec` accept them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from .._typing import Array, FeatureFn, KernelFn
from ..errors import SpecError

__all__ = ["Kernel", "KernelFamily", "Param", "register", "from_spec", "families", "parse_spec"]


@dataclasses.dataclass(frozen=True, eq=False)
class Kernel:
    """A kernel ``k(x1, x2) -> (n1, n2)`` on NHWC images, plus what it knows about itself.

    Attributes:
      name: the family name, e.g. ``"rbf"``.
      params: resolved parameters (defaults filled in), as ``(name, value)`` pairs.
      fn: ``fn(x1: (n1, h, w, c), x2: (n2, h, w, c)) -> (n1, n2)``; pure, jit-able,
        differentiable in both arguments.
      features: ``phi(x: (n, h, w, c)) -> (n, p)`` with ``fn(x1, x2) == phi(x1) @ phi(x2).T``,
        when the kernel has an explicit finite feature map (enables primal ridge,
        cost linear in n); else ``None``.
      inverse: ``inverse(f: (n, p), image_shape) -> (n, h, w, c)`` with
        ``inverse(phi(x), x.shape[1:]) == x``, when the feature map is invertible; else ``None``.
      keyed: for random-feature kernels, ``keyed(key, x1, x2) -> (n1, n2)``: the same kernel with its
        random networks drawn from the PRNG ``key`` (a traced argument, so redrawing every step of a
        jitted loop does not recompile); ``fn`` is ``keyed`` at the key of the spec's ``seed``. Else ``None``.

    Kernels compare by identity, so one can be a static argument of ``jax.jit``.
    """

    name: str
    params: tuple[tuple[str, Any], ...]
    fn: KernelFn
    features: FeatureFn | None = None
    inverse: Callable[[Array, tuple[int, ...]], jax.Array] | None = None
    keyed: Callable[[Any, Array, Array], jax.Array] | None = None

    def __post_init__(self):
        # One compiled program per input shape instead of one per primitive per shape.
        object.__setattr__(self, "_fn_jit", jax.jit(self.fn))
        if self.features is not None:
            object.__setattr__(self, "features", jax.jit(self.features))

    def __call__(self, x1: Array, x2: Array) -> jax.Array:
        return self._fn_jit(x1, x2)

    @property
    def spec(self) -> str:
        """Canonical spec string that rebuilds this kernel with :func:`from_spec`."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params)

    def param(self, name: str) -> Any:
        return dict(self.params)[name]

    def __repr__(self) -> str:
        return f"Kernel({self.spec!r})"


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a kernel family: its type (``int``, ``float``, ``str``) and default."""

    type: type
    default: Any
    doc: str = ""
    choices: tuple[Any, ...] | None = None


@dataclasses.dataclass(frozen=True)
class KernelFamily:
    name: str
    params: Mapping[str, Param]
    build: Callable[..., Kernel]
    doc: str


_FAMILIES: dict[str, KernelFamily] = {}


def register(name: str, *, params: Mapping[str, Param] | None = None, doc: str = "", aliases: tuple[str, ...] = ()):
    """Decorator: register ``build(**params) -> Kernel`` as the kernel family ``name``.

    Registration happens once, when the defining module is imported by
    ``kdistill.kernels``.
    """

    def deco(build: Callable[..., Kernel]) -> Callable[..., Kernel]:
        fam = KernelFamily(name=name, params=dict(params or {}), build=build, doc=doc)
        for n in (name, *aliases):
            if n in _FAMILIES:
                raise RuntimeError(f"kernel family {n!r} registered twice")
            _FAMILIES[n] = fam
        return build

    return deco


def families() -> dict[str, KernelFamily]:
    """All registered kernel families by name (aliases included)."""
    return dict(_FAMILIES)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _convert(family: str, key: str, raw: str, p: Param) -> Any:
    try:
        if p.type is bool:
            if raw.lower() in ("1", "true", "yes"):
                value: Any = True
            elif raw.lower() in ("0", "false", "no"):
                value = False
            else:
                raise ValueError(raw)
        elif p.type is int:
            value = int(raw)
        elif p.type is float:
            value = float(raw)
        else:
            value = p.type(raw)
    except ValueError:
        raise SpecError(
            f"kernel {family!r}: parameter {key}={raw!r} is not a valid {p.type.__name__}"
        ) from None
    if p.choices is not None and value not in p.choices:
        raise SpecError(
            f"kernel {family!r}: {key}={raw!r} is not one of {', '.join(map(str, p.choices))}"
        )
    return value


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"name:a=1,b=2"`` into ``("name", {"a": "1", "b": "2"})`` (values unconverted)."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty kernel spec: give a name such as 'linear' or 'rbf:gamma=0.01'")
    name, _, rest = spec.strip().partition(":")
    raw: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, eq, v = item.partition("=")
        if not eq or not k.strip() or not v.strip():
            raise SpecError(f"kernel spec {spec!r}: expected name:key=value,... but got {item!r}")
        if k.strip() in raw:
            raise SpecError(f"kernel spec {spec!r}: parameter {k.strip()!r} given twice")
        raw[k.strip()] = v.strip()
    return name.strip(), raw


def from_spec(spec: str | Kernel, **overrides: Any) -> Kernel:
    """Build a :class:`Kernel` from a spec string such as ``"rbf:gamma=0.01"``.

    ``overrides`` set parameters from Python (they win over the string).
    Unknown names or parameters raise :class:`~kdistill.errors.SpecError`
    naming the valid choices.

    >>> from kdistill.kernels import from_spec
    >>> from_spec("rbf:gamma=0.5").spec
    'rbf:gamma=0.5'
    """
    if isinstance(spec, Kernel):
        if overrides:
            return from_spec(spec.spec, **overrides)
        return spec
    name, raw = parse_spec(spec)
    fam = _FAMILIES.get(name)
    if fam is None:
        raise SpecError(f"unknown kernel {name!r}; valid kernels: {', '.join(sorted(_FAMILIES))}")
    values: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in fam.params:
            valid = ", ".join(fam.params) or "none"
            raise SpecError(f"kernel {fam.name!r} has no parameter {k!r}; valid parameters: {valid}")
        values[k] = _convert(fam.name, k, v, fam.params[k])
    for k, v in overrides.items():
        if k not in fam.params:
            valid = ", ".join(fam.params) or "none"
            raise SpecError(f"kernel {fam.name!r} has no parameter {k!r}; valid parameters: {valid}")
        values[k] = v
    resolved = {k: values.get(k, p.default) for k, p in fam.params.items()}
    return fam.build(**resolved)
