"""``kdistill.distill``: distil a user's own arrays in one call."""

from __future__ import annotations

from typing import Any

import numpy as np

from .parallel import Executor
from ._io import DistilledSet
from .data import Dataset
from .errors import InvalidInputError

__all__ = ["distill", "as_images", "encode_labels"]


def as_images(x: Any, *, what: str = "x") -> tuple[np.ndarray, tuple[int, ...]]:
    """``(n, d)``, ``(n, h, w)`` or ``(n, h, w, c)`` numbers -> ``(n, h, w, c) float32`` and the input's
    per-sample shape. Flat rows become ``(n, 1, 1, d)`` images, so each feature is a channel and
    ``standardize`` scales every feature on its own (like scikit-learn's StandardScaler); every kernel
    that flattens works on them (linear, rbf, fcnn, rff, fc-*), ConvNet kernels need real images."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what} is not an array of numbers ({e})") from None
    if a.dtype == np.bool_ or a.dtype.kind not in "iuf":
        raise InvalidInputError(f"{what} has dtype {a.dtype}; give real numbers (int or float)")
    shape = tuple(int(s) for s in a.shape[1:])
    if a.ndim == 2:
        a = a[:, None, None, :]
    elif a.ndim == 3:
        a = a[..., None]
    elif a.ndim != 4:
        raise InvalidInputError(f"{what} has shape {a.shape}; give (n, d), (n, h, w) or (n, h, w, c)")
    if a.shape[0] == 0 or a[0].size == 0:
        raise InvalidInputError(f"{what} has shape {np.shape(x)}; it holds no samples or no features")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise InvalidInputError(f"{what} contains NaN or infinite values (or values too large for float32); "
                                "clean them first")
    return a, shape


_SCALE_RATIO = 4.0  # typical sample magnitudes of x and x_test further apart than this: two scalings of the data
_SCALE_MIN_SAMPLES = 20  # fewer test samples say too little about their scale


def _typical_magnitude(a: np.ndarray) -> float:
    """Median over (up to about 10,000 evenly spaced) samples of each sample's largest |value|."""
    rows = a[:: max(1, a.shape[0] // 10_000)]
    return float(np.median(np.abs(rows.reshape(rows.shape[0], -1)).max(axis=1)))


def check_same_scale(x: np.ndarray, x_test: np.ndarray) -> None:
    """Refuse training and test samples on different scales (say pixels 0..16 and 0..1): the test set goes
    through the training set's standardisation, so a model would score near chance without any error.
    Compared: the median over samples of each sample's largest |value| (up to 10,000 samples of each), which
    is 16 against 1 there and stable for any 20 or more samples of one distribution."""
    if x_test.shape[0] < _SCALE_MIN_SAMPLES:
        return
    typical = [_typical_magnitude(a) for a in (x, x_test)]
    if min(typical) == 0.0:
        return
    ratio = max(typical) / min(typical)
    if ratio > _SCALE_RATIO:
        raise InvalidInputError(f"x spans [{float(x.min()):.4g}, {float(x.max()):.4g}] but x_test spans "
                                f"[{float(x_test.min()):.4g}, {float(x_test.max()):.4g}]: a typical sample's largest "
                                f"value differs {ratio:.0f}x; scale both the same way (for example both 0..1)")


def encode_labels(y: Any, n: int, *, what: str = "y") -> tuple[np.ndarray, list]:
    """Any 1-D class labels -> ``(n,) int64`` codes 0..k-1 and the sorted classes they stand for."""
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InvalidInputError(f"{what} has shape {a.shape}; give one class label per sample (not one-hot)")
    if a.shape[0] != n:
        raise InvalidInputError(f"x has {n} samples but {what} has {a.shape[0]} labels; they must match")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise InvalidInputError(f"{what} contains NaN or infinite labels")
    try:
        classes, codes = np.unique(a, return_inverse=True)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in a.ravel()})
        raise InvalidInputError(f"{what} mixes label types ({', '.join(kinds)}), which cannot be ordered; give labels "
                                "of one type (all numbers or all strings)") from None
    return codes.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def distill(
    x: Any,
    y: Any,
    *,
    method: str = "analytic",
    ipc: int = 1,
    kernel: str | None = None,
    seed: int = 0,
    preprocess: str = "standardize",
    reg: float | str = "auto",
    val_size: int = 5000,
    precision: str = "auto",
    time_limit: float = 0.0,
    x_test: Any = None,
    y_test: Any = None,
    progress: bool = False,
    executor: Executor | None = None,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    **options: Any,
) -> DistilledSet:
    """Distil labelled arrays ``x: (n, d) | (n, h, w) | (n, h, w, c)``, ``y: (n,)`` to ``ipc`` samples per class.

    ``val_size`` held-out training images choose ``reg="auto"`` and iterative methods' best step (at most
    a fifth of ``x``). ``kernel`` defaults to the method's own (``kdistill methods``; rfad's random
    ConvNets), else ``fcnn``; ``precision="auto"`` is the method's own (float32 for rfad, else float64).
    ``options`` are the method's own (``kdistill methods`` lists them, e.g. ``steps=200,
    learn_labels=True`` for KIP). ``time_limit``: seconds for the whole call (0: none); iterative methods
    learn for what is left once evaluating the set is set aside. Returns a :class:`~kdistill.io.DistilledSet`: ``.images`` in the
    preprocessed space the kernel saw, ``.pixels()`` in the input's space and layout, ``.labels``
    ``(m, k)`` targets, ``.classes`` the original class of each label column, ``.summary`` the
    run's summary (test accuracy when ``x_test, y_test`` are given), ``.save(path)``. The caller's
    JAX settings are left as they were.

    Distributed (``pip install 'kdistill[distributed]'``): ``client`` (a ``distributed.Client``), ``workers=N``
    (a local cluster of N processes for this call) or ``scheduler="tcp://HOST:PORT"`` run the block
    computations and iterative steps on Dask, with the same result to rounding (docs/distributed.md).

    >>> import numpy as np, kdistill
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5)) + np.repeat([[0.0], [3.0]], 100, axis=0)
    >>> s = kdistill.distill(x, np.repeat(["a", "b"], 100), kernel="linear", ipc=1)
    >>> s.pixels().shape, s.classes
    ((2, 5), ['a', 'b'])
    """
    from .methods import RunConfig, get_method
    from .runs import run

    if kernel is None:  # the method's own (rfad: its random ConvNets), else the closed-form paper's map
        kernel = get_method(method).kernel or "fcnn"

    images, input_shape = as_images(x)
    codes, classes = encode_labels(y, images.shape[0])
    if len(classes) < 2:
        raise InvalidInputError(f"y holds only one class ({classes[0]!r}); distillation needs at least 2 classes")
    if x_test is not None or y_test is not None:
        if x_test is None or y_test is None:
            raise InvalidInputError("give both x_test and y_test, or neither")
        test_images, test_shape = as_images(x_test, what="x_test")
        if test_shape != input_shape:
            raise InvalidInputError(f"x_test samples are {test_shape} but x samples are {input_shape}")
        lookup = {c: i for i, c in enumerate(classes)}
        raw = np.asarray(y_test).ravel()
        unseen = sorted({v.item() if hasattr(v, "item") else v for v in raw} - set(lookup), key=str)
        if unseen:
            raise InvalidInputError(f"y_test holds classes never seen in y: {unseen[:5]}")
        test_codes = np.array([lookup[v.item() if hasattr(v, "item") else v] for v in raw], dtype=np.int64)
        if test_codes.shape[0] != test_images.shape[0]:
            raise InvalidInputError(f"x_test has {test_images.shape[0]} samples but y_test has "
                                    f"{test_codes.shape[0]} labels")
        check_same_scale(images, test_images)
    else:
        test_images = np.zeros((0, *images.shape[1:]), np.float32)
        test_codes = np.zeros(0, np.int64)
    dataset = Dataset(name="arrays", x_train=images, y_train=codes, x_test=test_images, y_test=test_codes,
                      class_names=tuple(str(c) for c in classes), source="arrays given to kdistill.distill")
    config = RunConfig(method=method, ipc=ipc, kernel=kernel, seed=seed, preprocess=preprocess, reg=reg,
                       val_size=val_size, precision=precision, time_limit=time_limit, options=options)
    if executor is not None and (client is not None or workers is not None or scheduler is not None):
        raise InvalidInputError("give an executor, or a Dask client / workers / scheduler, not both")
    if executor is not None:
        result = run(dataset, config, progress=progress, executor=executor)
    else:
        from .parallel import executor_scope

        with executor_scope(client=client, workers=workers, scheduler=scheduler) as ex:
            result = run(dataset, config, progress=progress, executor=ex)
    ds = result.distilled
    meta = dict(ds.meta, input_shape=list(input_shape), classes=classes)
    return DistilledSet(ds.images, ds.labels, meta, ds.arrays, summary=result.summary)
