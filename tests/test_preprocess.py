"""Preprocessing (standardise, KIP's ZCA) and label helpers, against closed forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdistill.data import Preprocessor, class_balanced_indices, fit_preprocessor, one_hot
from kdistill.errors import InvalidInputError


@pytest.fixture
def images() -> np.ndarray:
    """(200, 4, 4, 3) float32 pixels in [0, 1] with correlated channels."""
    rng = np.random.default_rng(0)
    base = rng.random((200, 4, 4, 1))
    noise = rng.random((200, 4, 4, 3))
    return (0.6 * base + 0.4 * noise).astype(np.float32)


def test_standardize_zero_mean_unit_std_per_channel(images: np.ndarray) -> None:
    prep = fit_preprocessor(images, "standardize")
    out = prep.apply(images)
    assert out.shape == images.shape and out.dtype == np.float32
    flat = out.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(prep.to_pixels(out), images, atol=1e-6)


def test_none_is_identity(images: np.ndarray) -> None:
    prep = fit_preprocessor(images, "none")
    np.testing.assert_array_equal(prep.apply(images), images)
    np.testing.assert_array_equal(prep.to_pixels(images * 3 - 1), np.clip(images * 3 - 1, 0, 1))
    assert Preprocessor.from_arrays({}).kind == "none"


def _layer_norm_reference(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / flat.std(axis=1, keepdims=True)


@pytest.mark.parametrize("zca_reg", [0.1, 1.0])
def test_zca_whitened_covariance_has_closed_form_spectrum(images: np.ndarray, zca_reg: float) -> None:
    prep = fit_preprocessor(images, "zca", zca_reg=zca_reg)
    out = prep.apply(images).reshape(len(images), -1).astype(np.float64)
    # reference: layer norm then covariance, computed here independently
    z = _layer_norm_reference(images)
    zc = z - z.mean(axis=0)
    e = np.linalg.eigvalsh(zc.T @ zc / len(z))
    r = zca_reg * e.clip(0).mean()
    expected = np.sort(e.clip(0) / (e.clip(0) + r))
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    got = np.linalg.eigvalsh(out.T @ out / len(out))
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # ZCA (unlike PCA whitening) is symmetric: W = W^T
    np.testing.assert_allclose(prep.whitening, prep.whitening.T, atol=1e-6)


def test_zca_round_trip_through_arrays(images: np.ndarray, tmp_path) -> None:
    prep = fit_preprocessor(images, "zca", zca_reg=0.1)
    np.savez(tmp_path / "p.npz", **prep.to_arrays(), other=np.zeros(2))
    with np.load(tmp_path / "p.npz") as stored:
        again = Preprocessor.from_arrays(dict(stored))
    assert all(k.startswith("prep_") for k in prep.to_arrays())
    assert again.kind == "zca" and again.zca_reg == 0.1 and again.image_shape == (4, 4, 3)
    np.testing.assert_array_equal(again.apply(images[:7]), prep.apply(images[:7]))
    json.dumps(again.describe())
    assert again.describe()["kind"] == "zca" and again.describe()["zca_reg"] == 0.1


def test_standardize_round_trip_through_arrays(images: np.ndarray) -> None:
    prep = fit_preprocessor(images, "standardize")
    again = Preprocessor.from_arrays(prep.to_arrays())
    np.testing.assert_array_equal(again.apply(images), prep.apply(images))
    assert json.loads(json.dumps(again.describe()))["kind"] == "standardize"


def test_zca_to_pixels_undoes_whitening_up_to_layer_norm(images: np.ndarray) -> None:
    prep = fit_preprocessor(images, "zca", zca_reg=0.1)
    back = prep.to_pixels(prep.apply(images)).reshape(len(images), -1).astype(np.float64)
    # layer norm is an affine map per image, so min-max rescaling both sides must agree
    ref = images.reshape(len(images), -1).astype(np.float64)
    ref = (ref - ref.min(axis=1, keepdims=True)) / np.ptp(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(back, ref, atol=1e-3)
    assert back.min() >= 0.0 and back.max() <= 1.0


def test_preprocessor_errors(images: np.ndarray) -> None:
    with pytest.raises(InvalidInputError, match="unknown preprocessing 'pca'"):
        fit_preprocessor(images, "pca")
    with pytest.raises(InvalidInputError, match="zca_reg"):
        fit_preprocessor(images, "zca", zca_reg=0.0)
    prep = fit_preprocessor(images, "standardize")
    with pytest.raises(InvalidInputError, match="fitted on"):
        prep.apply(np.zeros((2, 5, 5, 3), np.float32))
    with pytest.raises(InvalidInputError, match="lacks prep_whitening"):
        Preprocessor.from_arrays({"prep_kind": np.array("zca"), "prep_feature_mean": np.zeros(3)})


# ---------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.integers(7, 12))
def test_one_hot_centred_rows_sum_to_zero(labels: list[int], k: int) -> None:
    y = one_hot(np.array(labels), k)
    assert y.shape == (len(labels), k) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 0.0, atol=1e-6)
    assert np.all(y.argmax(axis=1) == np.array(labels))
    np.testing.assert_allclose(y[np.arange(len(labels)), labels], 1 - 1 / k, rtol=1e-6)


def test_one_hot_uncentred_and_errors() -> None:
    np.testing.assert_array_equal(one_hot([2, 0], 3, centred=False, dtype=np.float64), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(InvalidInputError, match="only 3 classes"):
        one_hot([0, 3], 3)


def test_class_balanced_indices() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    idx = class_balanced_indices(labels, 5, seed=1)
    assert idx.shape == (20,) and idx.dtype == np.int64 and len(set(idx.tolist())) == 20
    np.testing.assert_array_equal(labels[idx], np.repeat(np.arange(4), 5))
    np.testing.assert_array_equal(idx, class_balanced_indices(labels, 5, seed=1))
    assert not np.array_equal(idx, class_balanced_indices(labels, 5, seed=2))
    # random order within a class, not sorted by index
    orders = [class_balanced_indices(labels, 5, seed=s)[:5] for s in range(5)]
    assert any(np.any(np.diff(o) < 0) for o in orders)


def test_class_balanced_indices_errors() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(InvalidInputError, match="class 1 has only 2 examples.*at most 2 per class"):
        class_balanced_indices(labels, 3, seed=0)
    with pytest.raises(InvalidInputError, match="class 3 has only 0 examples.*at most 0"):
        class_balanced_indices(labels, 1, seed=0, num_classes=4)
    with pytest.raises(InvalidInputError, match="per_class=0"):
        class_balanced_indices(labels, 0, seed=0)
