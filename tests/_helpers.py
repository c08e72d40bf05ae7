"""Helpers shared by several test files: official-format writers and CLI error checks."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # fmt: skip


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True, magic: bytes | None = None) -> Path:
    """IDX (yann.lecun.com/exdb/mnist): 0x00 0x00 0x08 ndim, big-endian uint32 dims, uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    payload = header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def run_cli(*args, **kw):
    """``kdistill ARGS`` in this process (click's CliRunner; each argument passed through ``str``); an exception
    the CLI does not turn into its one-line error propagates instead of becoming a result."""
    from click.testing import CliRunner

    from kdistill.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kw)


def error_line(result, *, after_progress: bool = False) -> str:
    """The CLI's contract for bad input: exit 2, exactly one 'error: ...' line on stderr, no traceback.
    ``after_progress``: a failure late in a run, which may follow the run's own progress lines (``resuming
    ... from step N``, a phase's estimate); the error is then the last line and the only one."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if after_progress:
        errors = [ln for ln in lines if ln.startswith("error")]
        assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), result.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def primal_ridge(phi: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge weights (k, p) on feature rows phi (n, p), targets y (n, k), solved in the primal:
    (phi^T phi + lam I) W^T = phi^T y for lam > 0, the minimum-norm solution W = y^T (phi^T)^+ for lam = 0.
    An independent reference for the closed-form distilled sets."""
    phi, y = np.asarray(phi, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if lam == 0:
        return y.T @ np.linalg.pinv(phi.T)
    return np.linalg.solve(phi.T @ phi + lam * np.eye(phi.shape[1]), phi.T @ y).T


def whole_and_resumed(tmp_path: Path, dataset, config, stop_step: int, *, name: str = "digits"):
    """Run ``config`` on ``dataset`` twice with ``kdistill.runs.run_to_dir``: whole into ``tmp_path/full``,
    and into ``tmp_path/cut`` stopped (KeyboardInterrupt) right after the checkpoint of ``stop_step``, then
    resumed to the end. Returns ``(full, cut)``, the two run directories."""
    import pytest

    from kdistill.runs import run_to_dir

    full, cut = tmp_path / "full", tmp_path / "cut"
    run_to_dir(full, dataset, config, dataset_ref=name)

    def stop(step):
        if step == stop_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_to_dir(cut, dataset, config, dataset_ref=name, on_checkpoint=stop)
    assert (cut / "checkpoint.npz").exists() and not (cut / "summary.json").exists()
    run_to_dir(cut, dataset, config, dataset_ref=name, resume=True)
    return full, cut


def three_digits():
    """``digits`` with its classes 0, 1 and 2 only (about 430 training images): methods whose compiled step
    grows with the classes (DC unrolls its per-class matching) compile in a third of the time."""
    import dataclasses

    from kdistill.data import load

    ds = load("digits")
    tr, te = ds.y_train < 3, ds.y_test < 3
    return dataclasses.replace(ds, x_train=ds.x_train[tr], y_train=ds.y_train[tr], x_test=ds.x_test[te],
                               y_test=ds.y_test[te], class_names=ds.class_names[:3])


def tiny_digits(digits, *, held_out: int = 0):
    """20 standardized digits images (2 per class) of the Dataset ``digits``, their centred one-hot labels and
    classes, the test set in the same space, and ``held_out`` other training images with their classes: the
    small set the finite-network tests train on."""
    from kdistill.data import class_balanced_indices, fit_preprocessor, one_hot

    prep = fit_preprocessor(digits.x_train, "standardize")
    idx = class_balanced_indices(digits.y_train, 2, seed=0)
    held = np.setdiff1d(np.arange(len(digits.y_train)), idx)[:held_out]
    return (prep.apply(digits.x_train[idx]), one_hot(digits.y_train[idx], 10), digits.y_train[idx],
            prep.apply(digits.x_test), digits.y_test, prep.apply(digits.x_train[held]), digits.y_train[held])


def colour_count(rgb: np.ndarray) -> int:
    """Distinct colours of an ``(h, w, 3)`` uint8 image (each pixel one 24-bit number, counted with
    ``np.bincount``: ``np.unique(axis=0)`` sorts rows and takes seconds on a screenshot)."""
    v = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    return int(np.count_nonzero(np.bincount((v[:, 0] << 16) | (v[:, 1] << 8) | v[:, 2], minlength=1 << 24)))
