"""Evaluate any distilled-set file (ours or KIP's released npz files) on a dataset."""

from __future__ import annotations

from pathlib import Path

from .. import io, krr
from ..data import Dataset, Preprocessor, fit_preprocessor, one_hot
from ..errors import InvalidInputError
from ..kernels import from_spec
from ._krr import support_accuracy

__all__ = ["evaluate_file", "preprocessor_for"]


def preprocessor_for(ds: io.DistilledSet, dataset: Dataset, *, path, preprocess: str | None = None):
    """Check that the distilled set fits ``dataset`` and return the preprocessing that puts the
    dataset's images in the distilled images' space: the one stored in the file, else ``preprocess``
    (default none) fitted on the training set."""
    if ds.image_shape != dataset.image_shape:
        raise InvalidInputError(
            f"{path}: images are {ds.image_shape} but {dataset.name} images are {dataset.image_shape}; "
            "wrong --dataset?"
        )
    if ds.num_classes != dataset.num_classes:
        raise InvalidInputError(
            f"{path}: labels have {ds.num_classes} classes but {dataset.name} has {dataset.num_classes}"
        )
    has_prep = any(key.startswith("prep_") for key in ds.arrays)
    stored = Preprocessor.from_arrays(ds.arrays)
    if preprocess is not None and has_prep and preprocess != stored.kind:
        raise InvalidInputError(
            f"{path}: file was made with preprocessing {stored.kind!r}; --preprocess {preprocess!r} would "
            "put the test set in a different space"
        )
    return stored if has_prep else fit_preprocessor(dataset.x_train, preprocess or "none")


def evaluate_file(
    path: str | Path, dataset: Dataset, *, kernel: str | None = None, reg: float | str | None = None,
    preprocess: str | None = None, val_size: int = krr.DEFAULT_VAL_SIZE,
) -> dict:
    """KRR test accuracy of the distilled set in ``path`` on ``dataset``'s full test set.

    The test images go through the preprocessing stored in the file (so they
    land in the same space as the distilled images); files without stored
    preprocessing use ``preprocess`` fitted on the training set (default none).
    Kernel and reg default to the sidecar's; ``reg="auto"`` chooses it on ``val_size`` held-out training images
    (at most a fifth of the training set), as ``distill --reg auto`` does.
    """
    ds = io.load(path)
    meta = ds.meta
    spec = kernel or meta.get("kernel")
    if spec is None:
        raise InvalidInputError(f"{path}: no kernel recorded in a sidecar; pass --kernel")
    k = from_spec(spec)
    # closed-form images fit one draw of the weights: refuse sets whose sidecar records another (or none)
    drawn = k.weights_draw
    if meta.get("method") == "analytic" and drawn is not None and meta.get("kernel_weights") != drawn \
            and (kernel is None or from_spec(meta.get("kernel", "linear")).spec == k.spec):
        raise InvalidInputError(
            f"{path}: a closed-form {k.name} set made by an earlier kdistill, whose {k.name} weights came from another "
            f"random draw; its images fit those weights only: make it again with kdistill distill --method analytic")
    prep = preprocessor_for(ds, dataset, path=path, preprocess=preprocess)
    # an absolute ridge (closed-form sets are built for one) wins unless the user gives --reg
    lam = meta.get("lam") if reg is None else None
    selection = None
    if reg == "auto":  # as `distill --reg auto`: chosen on held-out training images
        n = dataset.x_train.shape[0]
        val = krr.held_out_indices(n, krr.effective_val_size(val_size, n), seed=1)
        targets = one_hot(dataset.y_train[val], dataset.num_classes)
        selection = krr.select_support(k, ds.images, ds.labels, prep.apply(dataset.x_train[val]), targets)
        r = selection.reg
    elif reg is not None:
        r = float(reg)
        if not 0 <= r <= krr.MAX_REG:
            raise InvalidInputError(f"reg must be 'auto' or a number in 0 .. {krr.MAX_REG:g}, got {reg!r}")
    else:
        r = float(meta.get("reg", 1e-6))
        if not 0 <= r <= krr.MAX_REG:
            raise InvalidInputError(f"{path}: its sidecar records reg={r!r}, outside 0 .. {krr.MAX_REG:g}; pass --reg")
    acc = support_accuracy(k, ds.images, ds.labels, prep.apply(dataset.x_test), dataset.y_test, reg=r, lam=lam)
    return {"file": str(path), "dataset": dataset.name, "kernel": k.spec, "reg": r, "lam": lam,
            "reg_selection": None if selection is None else selection.as_dict(),
            "m": int(ds.images.shape[0]),
            "n_test": int(dataset.x_test.shape[0]), "preprocess": prep.kind, "test_accuracy": acc}
