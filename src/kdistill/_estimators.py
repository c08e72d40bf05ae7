"""scikit-learn estimators on top of :mod:`kdistill.krr` and :mod:`kdistill.kernels`.

:class:`KRR` is kernel ridge regression on mean-centred one-hot targets used as a
classifier, with the ridge chosen on a held-out split by default. It follows the
scikit-learn estimator API (``get_params``/``set_params``, ``clone``, ``Pipeline``,
``GridSearchCV``) and passes ``sklearn.utils.estimator_checks.check_estimator``.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted

from ._precision import check_precision, precision_scope
from .data import one_hot
from .errors import InvalidInputError
from .evaluate import FittedKRR, fit_krr
from .kernels import Kernel, from_spec

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn: the method form
    def _validate_data(estimator, X, y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)

__all__ = ["KRR", "Distiller"]

_DTYPES = {"float32": np.float32, "float64": np.float64}
_NO_Y = "no_validation"  # scikit-learn's marker for "validate X only"


@functools.lru_cache(maxsize=64)
def _kernel(spec: str) -> Kernel:
    # Shared between estimators (and clones), so JAX's compiled programs are reused.
    return from_spec(spec)


def _ndim(x) -> int | None:
    """Number of dimensions of ``x`` without copying arrays; ``None`` when it has none."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        try:
            return len(shape)
        except TypeError:
            return None
    try:
        return np.asarray(x).ndim
    except Exception:  # ragged lists and the like: let scikit-learn's validation report them
        return None


class KRR(ClassifierMixin, BaseEstimator):
    """Kernel ridge regression classifier with a kdistill kernel.

    Fits ``f(x) = K(x, X) (K + lam I)^-1 Y`` with ``K = K(X, X)`` the ``(n, n)``
    kernel matrix of the training inputs and ``Y`` the ``(n, k)`` mean-centred
    one-hot targets (1 at the class, minus ``1/k`` everywhere), and predicts the
    class with the largest output. The ridge is relative to the mean eigenvalue
    of ``K``: ``lam = reg * tr(K) / n``. For kernels with an explicit feature map
    ``phi: (n, ...) -> (n, p)`` with ``p <= 16384`` (e.g. ``"linear"``) the same
    model is fitted in the primal, ``f(x) = phi(x) W``,
    ``W = (Phi^T Phi + lam I_p)^-1 Phi^T Y`` (``tr(Phi^T Phi) = tr K``), at a cost
    linear in ``n``; otherwise in the dual, which needs ``n <= max_dual_n``.
    There is no intercept: with the linear kernel this is ``Ridge(alpha=lam,
    fit_intercept=False)`` on the centred one-hot targets.

    Parameters
    ----------
    kernel : str or Kernel, default="linear"
        A kernel spec string such as ``"linear"``, ``"rbf:gamma=0.01"`` or
        ``"fc-ntk:depth=3"`` (see :func:`kdistill.kernels.from_spec`), or a
        :class:`~kdistill.kernels.Kernel` built by it (used through its spec).
    reg : "auto" or float, default="auto"
        Relative ridge. ``"auto"`` chooses it from :data:`kdistill.krr.DEFAULT_GRID`
        (1e-8 ... 100) by accuracy on a held-out ``val_fraction`` of the
        training set (ties: lower squared error), then refits on all of it.
        A number ``>= 0`` is used as is.
    val_fraction : float, default=0.05
        Fraction of the training set held out when ``reg="auto"``.
    max_dual_n : int, default=10000
        Largest training set fitted in the dual (an ``n x n`` kernel matrix);
        larger sets need a kernel with an explicit feature map.
    precision : {"float64", "float32"}, default="float64"
        Precision of the kernel computations in JAX: inputs are cast to it and
        the kernel runs inside ``jax.enable_x64(precision == "float64")``
        (:func:`kdistill._precision.precision_scope`); the global JAX configuration
        is never changed. Linear algebra is float64 (NumPy/SciPy) either way.
    random_state : int, RandomState instance or None, default=0
        Seed of the held-out split of ``reg="auto"``; an int is used as the seed
        of :func:`kdistill.krr.split_indices` directly.

    Attributes
    ----------
    classes_ : ndarray of shape (k,)
        The class labels, sorted.
    reg_ : float
        The relative ridge used (chosen or given).
    lam_ : float
        The absolute ridge ``reg_ * tr(K) / n``.
    form_ : {"primal", "dual"}
        How the model was fitted.
    model_ : kdistill.krr.PrimalModel or kdistill.krr.DualModel
        The fitted model (``W: (p, k)`` or dual coefficients ``alpha: (n, k)``).
    reg_selection_ : kdistill.krr.RegSelection or None
        Validation accuracy and MSE per grid value when ``reg="auto"``.
    kernel_spec_ : str
        Canonical spec of the kernel used.
    n_features_in_ : int
        Number of input features, ``h * w * c`` for images.
    image_shape_ : tuple of int
        ``(h, w, c)`` the kernel sees; ``(1, 1, d)`` for ``(n, d)`` input.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.

    Notes
    -----
    ``X`` is ``(n, d)`` (seen by the kernel as ``(n, 1, 1, d)`` images),
    ``(n, h, w)`` (one channel) or ``(n, h, w, c)`` NHWC images. At prediction
    time, images must have the training image shape; ``(n, h*w*c)`` rows are
    reshaped to it.

    ``decision_function(X)`` returns the ``(n, k)`` outputs ``f(X)`` for
    ``k >= 3`` classes; for two classes it returns scikit-learn's ``(n,)``
    ``f_1 - f_0`` (positive means ``classes_[1]``), which equals
    ``RidgeClassifier(fit_intercept=False)``'s decision values.

    Examples
    --------
    >>> import numpy as np
    >>> from kdistill import KRR
    >>> from kdistill.krr import DEFAULT_GRID
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5))  # (n, d) features
    >>> y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "pos", "neg")
    >>> clf = KRR(kernel="rbf", reg="auto").fit(X, y)  # reg chosen on a 5 % held-out split
    >>> clf.classes_.tolist()
    ['neg', 'pos']
    >>> clf.reg_ in DEFAULT_GRID, clf.form_
    (True, 'dual')
    >>> clf.decision_function(X[:3]).shape  # two classes: f_1 - f_0
    (3,)
    >>> bool(clf.score(X, y) > 0.9)
    True
    >>> images = X.reshape(200, 1, 5, 1)  # NHWC images work too
    >>> KRR(kernel="linear", reg=1e-3).fit(images, y).image_shape_
    (1, 5, 1)
    """

    def __init__(
        self,
        kernel: str | Kernel = "linear",
        reg: str | float = "auto",
        *,
        val_fraction: float = 0.05,
        max_dual_n: int = 10_000,
        precision: str = "float64",
        random_state=0,
    ):
        self.kernel = kernel
        self.reg = reg
        self.val_fraction = val_fraction
        self.max_dual_n = max_dual_n
        self.precision = precision
        self.random_state = random_state

    # ---------------------------------------------------------------- settings

    def _check_settings(self) -> tuple[str, np.dtype]:
        """Validate the constructor arguments; returns (kernel spec, input dtype)."""
        if isinstance(self.kernel, Kernel):
            spec = self.kernel.spec
        elif isinstance(self.kernel, str):
            spec = self.kernel
        else:
            raise InvalidInputError(
                f"kernel must be a spec string such as 'linear' or 'rbf:gamma=0.01', got {self.kernel!r}"
            )
        spec = _kernel(spec).spec  # raises SpecError for unknown kernels or parameters
        reg = self.reg
        if isinstance(reg, str):
            if reg != "auto":
                raise InvalidInputError(f"reg must be 'auto' or a number >= 0, got {reg!r}")
        elif not isinstance(reg, numbers.Real) or isinstance(reg, bool) or not (np.isfinite(reg) and reg >= 0):
            raise InvalidInputError(f"reg must be 'auto' or a finite number >= 0, got {reg!r}")
        vf = self.val_fraction
        if not isinstance(vf, numbers.Real) or isinstance(vf, bool) or not 0.0 < vf < 1.0:
            raise InvalidInputError(f"val_fraction must be a number in (0, 1), got {vf!r}")
        mdn = self.max_dual_n
        if not isinstance(mdn, numbers.Integral) or isinstance(mdn, bool) or mdn < 1:
            raise InvalidInputError(f"max_dual_n must be a positive integer, got {mdn!r}")
        check_precision(self.precision)
        return spec, np.dtype(_DTYPES[self.precision])

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return int(rs)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    # ------------------------------------------------------------------- input

    def _validate_X(self, X, y=_NO_Y, *, reset: bool):
        """scikit-learn validation of ``X`` (and ``y``); returns images ``(n, h, w, c)`` (and ``y``)."""
        images_in = (_ndim(X) or 0) > 2
        image_shape = None
        if images_in:
            X = check_array(X, allow_nd=True, dtype=(np.float64, np.float32), input_name="X")
            if X.ndim not in (3, 4):
                raise InvalidInputError(
                    f"X has shape {X.shape}; expected (n, d) features or (n, h, w[, c]) images"
                )
            if X.ndim == 3:
                X = X[..., None]
            image_shape = tuple(int(s) for s in X.shape[1:])
            if not reset:
                check_is_fitted(self)
                if image_shape != self.image_shape_:
                    raise InvalidInputError(
                        f"X has images of shape {image_shape}, but {type(self).__name__} was fitted on "
                        f"images of shape {self.image_shape_}"
                    )
            X = X.reshape(X.shape[0], -1)
        kwargs = dict(dtype=(np.float64, np.float32), reset=reset)
        if y is _NO_Y:
            X = _validate_data(self, X, **kwargs)
        else:
            X, y = _validate_data(self, X, y, **kwargs)
        if reset:
            self.image_shape_ = image_shape if image_shape is not None else (1, 1, int(X.shape[1]))
        X = X.reshape((X.shape[0], *self.image_shape_))
        return X if y is _NO_Y else (X, y)

    # --------------------------------------------------------------------- fit

    def fit(self, X, y):
        """Fit on ``X: (n, d) | (n, h, w) | (n, h, w, c)`` and class labels ``y: (n,)``.

        Returns ``self``.
        """
        spec, dtype = self._check_settings()
        X, y = self._validate_X(X, y, reset=True)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        k = len(self.classes_)
        targets = one_hot(encoder.transform(y), k, dtype=np.float64)  # (n, k), rows sum to 0
        x = X.astype(dtype, copy=False)
        n = x.shape[0]
        kernel = _kernel(spec)
        auto = isinstance(self.reg, str)
        if auto and n < 2:
            raise InvalidInputError(
                f"reg='auto' needs at least 2 samples to hold out a validation split, got n_samples = {n}"
            )
        seed = self._seed()
        with precision_scope(self.precision):
            fitted = fit_krr(kernel, x, targets, reg="auto" if auto else float(self.reg),
                             val_fraction=self.val_fraction, seed=seed, max_dual_n=self.max_dual_n)
        if isinstance(fitted, str):
            raise InvalidInputError(f"cannot fit KRR: {fitted}; raise max_dual_n or subsample")
        self.kernel_spec_ = spec
        self.model_ = fitted.model
        self.form_ = fitted.form
        self.reg_ = float(fitted.model.reg)
        self.lam_ = float(fitted.model.lam)
        self.reg_selection_ = fitted.selection
        return self

    # ----------------------------------------------------------------- predict

    def _outputs(self, X) -> np.ndarray:
        """``f(X)``: the ``(n, k)`` float64 KRR outputs."""
        check_is_fitted(self)
        x = self._validate_X(X, reset=False).astype(_DTYPES[self.precision], copy=False)
        kernel = _kernel(self.kernel_spec_)
        with precision_scope(self.precision):
            return FittedKRR(self.model_, self.form_, None).predict(kernel, x)

    def decision_function(self, X) -> np.ndarray:
        """KRR outputs: ``(n, k)`` for ``k >= 3`` classes, ``(n,)`` ``f_1 - f_0`` for two."""
        f = self._outputs(X)
        if f.shape[1] == 2:
            return f[:, 1] - f[:, 0]
        return f

    def predict(self, X) -> np.ndarray:
        """Class labels ``(n,)`` from ``classes_``: the class with the largest output."""
        d = self.decision_function(X)
        if d.ndim == 1:
            return self.classes_[(d > 0).astype(int)]
        return self.classes_[np.argmax(d, axis=1)]


class Distiller(BaseEstimator):
    """Dataset distillation as a scikit-learn resampler: ``fit_resample(X, y) -> (X_s, y_s)``.

    ``X_s`` holds ``ipc`` synthetic samples per class in ``X``'s own space and layout, ``y_s``
    their classes (from ``classes_``), following imbalanced-learn's ``fit_resample`` convention,
    so a Distiller drops into ``imblearn.pipeline.Pipeline`` in front of any classifier (which
    then trains on the distilled set; predictions pass through untouched). A plain
    ``sklearn.pipeline.Pipeline`` cannot change the number of rows, so use imbalanced-learn's,
    or call ``fit_resample`` yourself.

    Parameters are those of :func:`kdistill.distill`; the method's own options go in
    ``options`` (a dict) or as keyword arguments (``Distiller(method="kip", steps=200)``).
    Learned labels are soft; ``y_s`` is their argmax, ``distilled_.labels`` keeps them.

    Attributes: ``distilled_`` (the :class:`~kdistill.io.DistilledSet`), ``classes_``, ``n_features_in_``.

    >>> import numpy as np
    >>> from kdistill import Distiller
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(5, 1, (50, 4))])
    >>> X_s, y_s = Distiller(kernel="linear", ipc=2).fit_resample(X, np.repeat([0, 1], 50))
    >>> X_s.shape, y_s.tolist()
    ((4, 4), [0, 0, 1, 1])
    """

    def __init__(self, method="analytic", ipc=1, kernel=None, *, seed=0, preprocess="standardize", reg="auto",
                 precision="auto", options=None, **kwargs):
        self.method = method
        self.ipc = ipc
        self.kernel = kernel
        self.seed = seed
        self.preprocess = preprocess
        self.reg = reg
        self.precision = precision
        self.options = {**(options or {}), **kwargs} if kwargs else options

    def fit(self, X, y):
        """Distil ``X: (n, d) | (n, h, w) | (n, h, w, c)``, ``y: (n,)``; the set is ``distilled_``."""
        from ._api import distill

        X = check_array(X, allow_nd=True, dtype=[np.float64, np.float32], ensure_min_samples=2)
        check_classification_targets(y)
        self.distilled_ = distill(X, y, method=self.method, ipc=self.ipc, kernel=self.kernel, seed=self.seed,
                                  preprocess=self.preprocess, reg=self.reg, precision=self.precision,
                                  **(self.options or {}))
        self.classes_ = np.asarray(self.distilled_.classes)
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        return self

    def fit_resample(self, X, y):
        """``(X_s, y_s)``: the distilled samples in ``X``'s space and layout, and their classes."""
        self.fit(X, y)
        dtype = np.asarray(X).dtype
        dtype = dtype if dtype.kind == "f" else np.float64  # synthetic samples are not integers
        return self.distilled_.pixels().astype(dtype, copy=False), self.distilled_.class_labels()
