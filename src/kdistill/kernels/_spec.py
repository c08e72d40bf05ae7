"""The kernel object, the registry of kernel families and spec-string parsing.

A spec string names a kernel family and optional parameters:
``"rbf:gamma=0.01"``, ``"fc-ntk:depth=3,w_std=1.4142"``, ``"linear"``.
Both the CLI and :func:`from_spec` accept them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np

from .._machine import format_bytes
from .._suggest import did_you_mean
from .._typing import Array, FeatureFn, KernelFn
from .._values import ValueCheckError, convert_value, describe_range, format_bound, range_text, type_name
from ..errors import SpecError

__all__ = ["Kernel", "KernelFamily", "Param", "register", "from_spec", "families", "parse_spec",
           "MAX_BYTES", "MAX_SEED", "check_bytes", "check_scale", "host_float"]


# Parameters added after specs were first recorded, at the value that means what specs without them meant:
# left out of spec strings, so sets and checkpoints recorded earlier still match (from_spec restores them).
_UNSHOWN = frozenset({("stem", 1)})


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
      inverse: ``inverse(f: (n, p), image_shape) -> (n, h, w, c)``, a float64 NumPy preimage with
        ``phi(inverse(f)) == f`` for every ``f`` the map can reach (``inverse(phi(x)) == x`` when the map
        is also injective), computed on the host in float64; for ``f`` outside the map's range, the
        map's documented approximation (e.g. a least-squares preimage). ``None`` when the map has no
        inverse.
      keyed: for random-feature kernels, ``keyed(key, x1, x2) -> (n1, n2)``: the same kernel with its
        random networks drawn from the PRNG ``key`` (a traced argument, so redrawing every step of a
        jitted loop does not recompile); ``fn`` is ``keyed`` at the key of the spec's ``seed``. Else ``None``.
      pair_seconds: for the exact network kernels whose cost per image pair is large (``convnet-ntk``,
        ``convnet-nngp``: O((h*w)^2) per pair), ``pair_seconds(image_shape) -> float``, a rough CPU estimate
        of seconds per pair of images, so long jobs can say up front how long they will take. Else ``None``.
      host_features: optional NumPy implementation of ``features`` (``host_features(x, dtype)`` with
        ``x`` a NumPy array, ``dtype`` the float type JAX would use for it, see :func:`host_float`). When set, ``features`` called on a NumPy
        array runs it on the host instead of compiling a JAX program for every new batch shape:
        bulk work (primal Gram matrices, predictions, the closed-form method) then costs BLAS time
        and no compilation. JAX arrays and tracers (gradients, ``jit``) still take the JAX path;
        the two must agree to rounding (tests compare them).
      draw_features: for random-feature kernels (``rf-convnet``, ``rf-fc``), ``draw_features(x, *, key,
        models=None, width=None) -> (n, models * p + 1)``: the kernel's features with its random networks
        drawn from the PRNG ``key`` (traced: a new key per step does not recompile); ``models`` and ``width``
        replace the spec's when given (cheaper draws of the same architecture). At the key of the spec's
        ``seed`` (``jax.random.key(seed)``) it is ``features``, and ``keyed(key, x1, x2) ==
        draw_features(x1, key=key) @ draw_features(x2, key=key).T``. Else ``None``.
      linear_matrix: for feature maps that are a linear map ``x -> M x`` that need not be onto (``deep-linear``),
        ``linear_matrix(d) -> M: (p, d)``, float64 NumPy, read-only, with ``features(x) == flatten(x) @ M.T``
        on inputs of ``d = h*w*c`` features; its column space is the map's range, which closed-form
        distillation projects onto. Else ``None`` (also for ``linear``, whose map is the identity).
      feature_bound: for feature maps whose every coordinate is bounded (``rff``: ``sqrt(2/p) cos(.)``),
        ``feature_bound(p) -> b`` with ``|f_i| <= b`` for the maps' features of ``p`` coordinates; the inverse
        is exact only inside that box (outside it, coordinates are clipped). Else ``None``.
      weights_draw: for kernels whose random weights an earlier kdistill drew otherwise (``fcnn``, ``rff``:
        :data:`~kdistill.kernels.WEIGHTS_DRAW`), the draw a closed-form set's sidecar must record
        (``kernel_weights``) for its images to fit this kernel's weights. ``None`` when the weights never
        changed.

    Kernels compare by identity, so one can be a static argument of ``jax.jit``.
    """

    name: str
    params: tuple[tuple[str, Any], ...]
    fn: KernelFn
    features: FeatureFn | None = None
    inverse: Callable[[Array, tuple[int, ...]], jax.Array] | None = None
    keyed: Callable[[Any, Array, Array], jax.Array] | None = None
    pair_seconds: Callable[[tuple[int, ...]], float] | None = None
    host_features: Callable[[np.ndarray, Any], np.ndarray] | None = None
    draw_features: Callable[..., jax.Array] | None = None
    linear_matrix: Callable[[int], np.ndarray] | None = None
    feature_bound: Callable[[int], float] | None = None
    weights_draw: str | None = None

    def __post_init__(self):
        # One compiled program per input shape instead of one per primitive per shape.
        object.__setattr__(self, "_fn_jit", jax.jit(self.fn))
        if self.features is not None:
            object.__setattr__(self, "features", _Features(self, self.features, self.host_features))

    def __call__(self, x1: Array, x2: Array) -> jax.Array | np.ndarray:
        if self.host_features is not None and isinstance(x1, np.ndarray) and isinstance(x2, np.ndarray):
            return self.features(x1) @ self.features(x2).T  # host path: no compilation per shape
        return self._fn_jit(x1, x2)

    @property
    def spec(self) -> str:
        """Canonical spec string that rebuilds this kernel with :func:`from_spec`."""
        shown = [(k, v) for k, v in self.params if (k, v) not in _UNSHOWN]
        if not shown:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in shown)

    def param(self, name: str) -> Any:
        return dict(self.params)[name]

    def __reduce_ex__(self, protocol):
        # A registry kernel travels as its spec string (its functions are jitted closures, which do not
        # pickle) and is rebuilt once per process: how kernels reach Dask workers. Another is rebuilt from
        # its plain fields (which must pickle themselves, e.g. with cloudpickle), jitted again on arrival.
        if getattr(self, "_registry", False):
            return _kernel_from_spec, (self.spec,)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(fields["features"], _Features):
            fields["features"] = fields["features"].raw
        return _rebuild_kernel, (fields,)

    def __repr__(self) -> str:
        return f"Kernel({self.spec!r})"


class _Features:
    """``kernel.features``: the jitted feature map, or the host (NumPy) one for NumPy input; pickles as its
    kernel's (``kernel.features`` is what primal map-reduces send to Dask workers). ``raw`` is the map as
    given to the kernel."""

    def __init__(self, kernel: Kernel, raw: Callable, host: Callable | None):
        self._kernel, self.raw, self._jitted, self._host = kernel, raw, jax.jit(raw), host

    def __call__(self, x):
        if self._host is not None and isinstance(x, np.ndarray):
            return self._host(x, host_float(x.dtype))
        return self._jitted(x)

    def __reduce__(self):
        return getattr, (self._kernel, "features")

    def __repr__(self) -> str:
        return f"{self._kernel!r}.features"


def _rebuild_kernel(fields: dict) -> Kernel:
    return Kernel(**fields)


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a kernel family: its type, default and allowed values.

    Attributes:
      type: ``int``, ``float``, ``str`` or ``bool``.
      default: value when not given; must itself be allowed.
      doc: one line for listings.
      choices: allowed values (strings).
      min, max: inclusive bounds, required for ``int`` and ``float`` parameters (so that no
        setting can hang or exhaust memory); ``min_exclusive`` makes ``min`` strict.
        Floats must also be finite; ints must be integers (not bools, not floats such as 2.5).

    >>> Param(int, 3, min=0, max=100).describe("depth")
    'depth=3 (int, 0..100)'
    >>> Param(float, 0.1, min=0, max=10).convert("fc-ntk", "b_std", "nan")
    Traceback (most recent call last):
    ...
    kdistill.errors.SpecError: kernel 'fc-ntk': b_std=nan is not a finite number; use a number in 0 .. 10
    """

    type: type
    default: Any
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False

    def allowed(self) -> str:
        """What a value must be, for messages: ``"an integer in 0 .. 100"``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        kind = type_name(self.type)
        if self.min is None and self.max is None:
            return kind
        if self.min is not None and self.max is not None and not self.min_exclusive:
            return f"{kind} in {format_bound(self.min)} .. {format_bound(self.max)}"
        return f"{kind} " + range_text(self.min, self.max, self.min_exclusive, number=format_bound)

    def describe(self, name: str | None = None) -> str:
        """``"depth=3 (int, 0..100)"`` for listings (without ``name``: ``"3 (int, 0..100)"``)."""
        if self.choices is not None:
            what = "one of " + "|".join(map(str, self.choices))
        else:
            what = describe_range(self.min, self.max, self.min_exclusive)
        text = f"{self.default!r} ({self.type.__name__}{', ' + what if what else ''})"
        return f"{name}={text}" if name is not None else text

    def convert(self, family: str, name: str, value: Any) -> Any:
        """A spec-string value (``str``) or a Python value -> the checked value of this parameter's type.

        The conversion and checks are :func:`kdistill._values.convert_value`'s, as for method options
        (booleans: ``1/0/true/false/yes/no/on/off``); a string is read without surrounding spaces.
        Raises :class:`~kdistill.errors.SpecError` with one line naming the kernel, the
        parameter, the value and what is allowed; the same message whichever way the
        value came.
        """
        where = f"kernel {family!r}: {name}"
        shown = f"{where}={_show(value)}"
        if isinstance(value, str):
            value = value.strip()
        try:
            value = convert_value(value, self.type, where=where, min=self.min, max=self.max,
                                  min_exclusive=self.min_exclusive, choices=self.choices)
        except ValueCheckError as err:
            why = f"is not {type_name(self.type)}" if err.reason == "type" else _WHY[err.reason]
            raise SpecError(f"{shown} {why}; use {self.allowed()}") from None
        if self.type is float:
            value = value + 0.0  # -0.0 -> 0.0
        return value


def host_float(dtype=np.float64) -> type:
    """The float type JAX would compute in for inputs of ``dtype``, for host (NumPy) work that must
    match it: float32 inputs stay float32; anything else is float64 when JAX's 64-bit types are on
    (``precision_scope("float64")``), else float32."""
    if np.dtype(dtype) == np.float32 or jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
        return np.float32
    return np.float64


# how a refusal of convert_value (its reason) reads in a kernel's message
_WHY = {"overflow": "is out of range", "range": "is out of range", "finite": "is not a finite number",
        "choices": "is not allowed"}
_TOKEN = re.compile(r"[\w.+-]{1,60}")


def _show(value: Any) -> str:
    """A value as it appears in a message, always on one line and short."""
    if isinstance(value, str):
        return value if _TOKEN.fullmatch(value) else _clip(repr(value))
    if isinstance(value, (bool, int, float, np.generic)) or value is None:
        return _clip(repr(value.item() if isinstance(value, np.generic) else value))
    return f"<{type(value).__name__}>"


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# Seeds are drawn into jax.random.key, which takes 32 bits in both precisions.
MAX_SEED = 2**32 - 1

# Memory a kernel's parameters may ask for at once (random weights, activations of one
# chunk of images): enough for every published setting, small enough for a laptop.
MAX_BYTES = 4 * 2**30


def check_bytes(family: str, nbytes: float, what: str, lower: str) -> None:
    """Refuse settings whose estimated memory ``nbytes`` exceeds :data:`MAX_BYTES`.

    ``what``: what is allocated, for which settings (``"random weights of models=8, width=65536"``);
    ``lower``: what to lower (``"width, models or depth"``).
    """
    if nbytes > MAX_BYTES:
        raise SpecError(f"kernel {family!r}: {what}: about {format_bytes(nbytes)} needed "
                        f"(limit {format_bytes(MAX_BYTES)}); lower {lower}")


# The kernel's values scale with the layers' variance gain; past 1e30 (or below 1e-30 with no bias
# to hold them up) they leave float32's range once multiplied by the inputs' size.
MAX_LOG10_SCALE = 30.0


def check_scale(family: str, *, gain: float, layers: int, settings: str, bias: float | None = None) -> None:
    """Refuse weight scales that make the kernel overflow or underflow.

    ``gain``: variance gain of one layer (``w_std**2 / 2`` behind a ReLU); ``layers``: how many
    such layers; the kernel scales as ``gain**layers``, refused beyond ``1e30`` (or below
    ``1e-30`` unless a bias std ``bias`` > 1e-15 holds the variances up). ``settings`` names
    the values in the message (``"w_std=10.0 with depth=100"``).
    """
    log10 = layers * math.log10(gain)
    head = f"kernel {family!r}: {settings} would scale the kernel by about 1e{log10:.0f}, which"
    if log10 > MAX_LOG10_SCALE:
        raise SpecError(f"{head} overflows; lower w_std (toward sqrt(2) = 1.414) or depth")
    if log10 < -MAX_LOG10_SCALE and (bias is None or bias < 1e-15):
        also = "" if bias is None else ", set b_std > 0"
        raise SpecError(f"{head} underflows to 0; raise w_std (toward sqrt(2) = 1.414){also} or lower depth")


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
    ``kdistill.kernels``. The decorated function (and ``KernelFamily.build``) checks
    and converts its keyword arguments with the ``Param`` table before running
    ``build``, so ``build`` always sees every parameter, valid and of its type, and
    only has to check combinations of them. Every ``int``/``float`` parameter must
    declare ``min`` and ``max``, and every default must be allowed.
    """
    params = dict(params or {})
    for key, p in params.items():
        if p.type in (int, float) and p.choices is None and (p.min is None or p.max is None):
            raise RuntimeError(f"kernel family {name!r}: parameter {key!r} needs min and max")
        p.convert(name, key, p.default)  # a default that is not allowed is a bug: fail at import

    def deco(build: Callable[..., Kernel]) -> Callable[..., Kernel]:
        @functools.wraps(build)
        def checked(**kwargs: Any) -> Kernel:
            kernel = build(**_resolve(name, params, kwargs))
            object.__setattr__(kernel, "_registry", kernel.name in _FAMILIES)  # rebuildable from its spec
            return kernel

        fam = KernelFamily(name=name, params=params, build=checked, doc=doc)
        for n in (name, *aliases):
            if n in _FAMILIES:
                raise RuntimeError(f"kernel family {n!r} registered twice")
            _FAMILIES[n] = fam
        return checked

    return deco


@functools.lru_cache(maxsize=64)
def _kernel_from_spec(spec: str) -> Kernel:
    """The kernel of ``spec``, one instance per process (unpickling; compiled functions are reused)."""
    return from_spec(spec)


def families() -> dict[str, KernelFamily]:
    """All registered kernel families by name (aliases included)."""
    return dict(_FAMILIES)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _resolve(family: str, params: Mapping[str, Param], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``family``: the ``given`` ones checked and converted, the rest at their defaults."""
    for k in given:
        if k not in params:
            valid = ", ".join(params) or "none"
            hint = did_you_mean(k, params) if isinstance(k, str) else None
            raise SpecError(f"kernel {family!r} has no parameter {_clip(repr(k))}; "
                            + (f"{hint} (valid parameters: {valid})" if hint else f"valid parameters: {valid}"))
    return {k: p.convert(family, k, given[k]) if k in given else p.default for k, p in params.items()}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"name:a=1,b=2"`` into ``("name", {"a": "1", "b": "2"})`` (values unconverted)."""
    if not isinstance(spec, str):
        shown = _show(spec)
        got = type(spec).__name__ + ("" if shown.startswith("<") else f" {shown}")
        raise SpecError(f"a kernel spec must be a string such as 'rbf:gamma=0.01' (or a Kernel), got {got}")
    if not spec.strip():
        raise SpecError("empty kernel spec: give a name such as 'linear' or 'rbf:gamma=0.01'")
    name, _, rest = spec.strip().partition(":")
    raw: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, eq, v = item.partition("=")
        if not eq or not k.strip() or not v.strip():
            raise SpecError(f"kernel spec {_clip(repr(spec))}: expected name:key=value,... but got {_clip(repr(item))}")
        if k.strip() in raw:
            raise SpecError(f"kernel spec {_clip(repr(spec))}: parameter {_clip(repr(k.strip()))} given twice")
        raw[k.strip()] = v.strip()
    return name.strip(), raw


def from_spec(spec: str | Kernel, **overrides: Any) -> Kernel:
    """Build a :class:`Kernel` from a spec string such as ``"rbf:gamma=0.01"``.

    ``overrides`` set parameters from Python (they win over the string). Every value,
    from the string or from Python, is checked against the family's :class:`Param`
    table (type, finiteness, range), and settings that would allocate more than
    :data:`MAX_BYTES` or overflow are refused: all with a one-line
    :class:`~kdistill.errors.SpecError` naming the parameter and what is allowed.

    >>> from kdistill.kernels import from_spec
    >>> from_spec("rbf:gamma=0.5").spec
    'rbf:gamma=0.5'
    >>> from_spec("fc-ntk:depth=1000000000")
    Traceback (most recent call last):
    ...
    kdistill.errors.SpecError: kernel 'fc-ntk': depth=1000000000 is out of range; use an integer in 0 .. 100
    """
    if isinstance(spec, Kernel):
        if overrides:
            return from_spec(spec.spec, **overrides)
        return spec
    name, raw = parse_spec(spec)
    fam = _FAMILIES.get(name)
    if fam is None:
        hint = did_you_mean(name, _FAMILIES)
        if hint:
            raise SpecError(f"unknown kernel {_clip(repr(name))}; {hint} (kdistill kernels lists them)")
        raise SpecError(f"unknown kernel {_clip(repr(name))}; valid kernels: {', '.join(sorted(_FAMILIES))}")
    # the string's values first (a bad one is reported even when an override replaces it)
    values = _resolve(fam.name, fam.params, raw)
    values = {k: v for k, v in values.items() if k in raw}
    return fam.build(**{**values, **overrides})
