"""Closed-form distillation (Chen, Huang & Weng 2024): W_S = W on random problems, inverses, errors.

The reference is the definition: W_S is recomputed by ridge regression
(primal, independently of the construction) on features of the produced images.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdistill import krr
from kdistill.methods import analytic
from kdistill.errors import InvalidInputError
from kdistill.kernels import from_spec

# float64 references at float64 tolerances: this module pins 64-bit JAX types.
pytestmark = pytest.mark.usefixtures("x64_module")

MAPS = ["linear", "fcnn", "fcnn:depth=2", "rff"]


def _ridge_weights(phi: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Primal ridge (k, p) on rows phi (n, p), y (n, k): an independent reference."""
    p = phi.shape[1]
    return np.linalg.lstsq(phi.T @ phi + lam * np.eye(p), phi.T @ y, rcond=None)[0].T


def _problem(seed, n=80, shape=(3, 3, 1), k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape))
    labels = rng.integers(0, k, size=n)
    y = np.eye(k)[labels] - 1.0 / k
    return x, y


@pytest.mark.parametrize("spec", MAPS)
@pytest.mark.parametrize("lam_frac", [0.0, 0.5])
@pytest.mark.parametrize("m_per_class", [1, 3])
def test_distilled_set_reproduces_weights(spec, lam_frac, m_per_class):
    kernel = from_spec(spec)
    x, y = _problem(1)
    phi = np.asarray(kernel.features(x))
    w = _ridge_weights(phi, y, lam=0.3)  # (k, p)
    k = y.shape[1]
    y_s = (np.tile(np.eye(k), m_per_class) - 1.0 / k)  # (k, m), centred one-hot
    z = analytic.noise_z(w, y_s, seed=0)
    lam_s = lam_frac * analytic.lambda_s_bound(w, y_s, z)
    phi_s = analytic.distilled_features(w, y_s, z, lambda_s=lam_s)
    # W_S from the features themselves
    np.testing.assert_allclose(_ridge_weights(phi_s, y_s.T, lam_s) if lam_s > 0 else
                               y_s @ np.linalg.pinv(phi_s.T), w, rtol=1e-6, atol=1e-9)
    if spec == "rff":
        return  # images exist only inside rff's range: covered by test_rff_round_trip_inside_range
    # ... and from the images a user gets back (round trip through the inverse map)
    images = np.asarray(kernel.inverse(phi_s, x.shape[1:]))
    phi_back = np.asarray(kernel.features(images))
    w_s = analytic.weights_from_support(phi_back, y_s, lam=lam_s)
    np.testing.assert_allclose(w_s, w, rtol=1e-5, atol=1e-8)
    agree = analytic.weight_agreement(w_s, w)
    assert agree.cosine > 1 - 1e-9 and agree.relative_error < 1e-5


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 5), extra=st.integers(0, 4), p=st.integers(6, 12),
       lam_frac=st.sampled_from([0.0, 0.2, 0.9, 1.0]), real_labels=st.booleans())
def test_identity_property(seed, k, extra, p, lam_frac, real_labels):
    """For any W, any rank-k Y_S (m >= k) and any Z: ridge on the distilled features gives W."""
    rng = np.random.default_rng(seed)
    m = k + extra
    w = rng.normal(size=(k, p))
    y_s = rng.normal(size=(k, m)) if real_labels else np.eye(k)[rng.permutation(np.arange(m) % k)].T
    z = rng.normal(size=(m, p))
    lam_s = lam_frac * analytic.lambda_s_bound(w, y_s, z)
    phi_s = analytic.distilled_features(w, y_s, z, lambda_s=lam_s)
    w_s = analytic.weights_from_support(phi_s, y_s, lam=lam_s)
    np.testing.assert_allclose(w_s, w, rtol=1e-6, atol=1e-8 * np.abs(w).max())


def test_primal_ridge_on_distilled_images_matches_krr_module():
    """The round trip through kdistill.krr (what evaluation uses) also recovers W."""
    kernel = from_spec("fcnn")
    x, y = _problem(2, shape=(2, 2, 2))
    w_model = krr.fit_primal(kernel.features, x, y, reg=1e-2)
    w = w_model.w.T
    y_s = np.eye(3) - 1 / 3
    phi_s = analytic.distilled_features(w, y_s, analytic.noise_z(w, y_s, seed=1))
    images = np.asarray(kernel.inverse(phi_s, x.shape[1:]))
    xt = np.random.default_rng(5).normal(size=(20, 2, 2, 2))
    dual = krr.fit(kernel, images, y_s.T, lam=0.0)
    np.testing.assert_allclose(krr.predict(kernel, dual, xt), krr.predict_primal(kernel.features, w_model, xt),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("spec,dtype", [("linear", np.float32), ("linear", np.float64), ("fcnn", np.float32),
                                        ("fcnn", np.float64), ("fcnn:depth=3,slope=0.2", np.float64)])
def test_inverse_of_features_is_identity(spec, dtype):
    kernel = from_spec(spec)
    x = np.random.default_rng(0).normal(size=(7, 5, 5, 2)).astype(dtype)
    back = np.asarray(kernel.inverse(kernel.features(x), x.shape[1:]))
    np.testing.assert_allclose(back, x, rtol=1e-3 if dtype == np.float32 else 1e-9,
                               atol=1e-3 if dtype == np.float32 else 1e-9)


def test_rff_round_trip_inside_range_and_kernel_approximation():
    kernel = from_spec("rff:gamma=0.05")
    x = np.random.default_rng(0).normal(size=(6, 4, 4, 1))
    f = np.asarray(kernel.features(x))
    f_back = np.asarray(kernel.features(kernel.inverse(f, x.shape[1:])))
    np.testing.assert_allclose(f_back, f, atol=1e-9)  # a preimage exists inside the range
    # outside the range (|sqrt(p/2) f| > 1) the round trip is not exact: it clips
    far = np.asarray(kernel.features(kernel.inverse(3 * f, x.shape[1:])))
    assert np.linalg.norm(far - 3 * f) > 0.1 * np.linalg.norm(3 * f)


def test_fewer_images_than_classes_is_refused():
    w = np.ones((4, 6))
    with pytest.raises(InvalidInputError, match="fewer images than classes"):
        analytic.distilled_features(w, np.eye(4)[:, :3])


def test_lambda_bound_error_names_the_bound_and_clamp_warns():
    rng = np.random.default_rng(0)
    w, y_s = rng.normal(size=(3, 8)), np.eye(3)
    bound = analytic.lambda_s_bound(w, y_s)
    with pytest.raises(InvalidInputError, match=f"{bound:.6g}"):
        analytic.distilled_features(w, y_s, lambda_s=2 * bound)
    with pytest.warns(RuntimeWarning, match="clamped"):
        phi_s = analytic.distilled_features(w, y_s, lambda_s=2 * bound, clamp=True)
    np.testing.assert_allclose(analytic.weights_from_support(phi_s, y_s, lam=bound), w, rtol=1e-6)


def test_labels_must_span_weights():
    w = np.random.default_rng(0).normal(size=(3, 5))
    y_s = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # rank 2
    with pytest.raises(InvalidInputError, match="range of the labels"):
        analytic.distilled_features(w, y_s)


def test_realistic_init_stays_close_when_starting_images_fit():
    """If the real images already carry W's labels, the distilled features are exactly theirs."""
    rng = np.random.default_rng(0)
    phi0 = rng.normal(size=(6, 10))  # m=6 images, p=10
    w = rng.normal(size=(3, 10))
    y_s, z = analytic.realistic_labels_and_z(w, phi0)
    phi_s = analytic.distilled_features(w, y_s, z)
    np.testing.assert_allclose(analytic.weights_from_support(phi_s, y_s, lam=0.0), w, rtol=1e-7, atol=1e-9)
    # distance to the start equals the part of W the start images cannot express (not larger)
    assert np.linalg.norm(phi_s - phi0) < np.linalg.norm(phi0)


def test_rff_noise_init_scales_z_into_range():
    """For rff the free Z is enlarged until the targets lie in the map's range (W_S = W for any Z)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8, 8, 1))
    labels = np.arange(60) % 3
    w = rng.normal(size=(3, 64))
    w -= w.mean(axis=0)  # like a model fitted to mean-centred labels
    kernel = from_spec("rff")
    kw = dict(num_classes=3, ipc=4, seed=0, init="noise")
    fixed = analytic.distill(kernel, w, x, labels, z_scale_auto=False, **kw)
    auto = analytic.distill(kernel, w, x, labels, **kw)
    assert fixed.info["rff_out_of_range_fraction"] > 0.5 and fixed.info["weight_cosine"] < 0.9
    assert auto.info["rff_out_of_range_fraction"] == 0 and auto.info["z_scale"] > 0.1
    assert auto.info["weight_cosine"] > 1 - 1e-9
