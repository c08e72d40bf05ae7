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
    z = 0.3 * np.std(w) * np.random.default_rng(0).normal(size=(y_s.shape[1], w.shape[1]))
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
    phi_s = analytic.distilled_features(w, y_s, np.random.default_rng(1).normal(size=(y_s.shape[1], w.shape[1])))
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


@pytest.mark.parametrize("init", ["noise", "real"])
def test_rff_targets_are_scaled_into_its_range(init):
    """rff's inverse exists only where |sqrt(p/2) f| <= 1: labels and features are scaled together (W_S
    unchanged) until the targets lie inside 0.95 of the range, so the round trip is exact."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8, 8, 1))
    labels = np.arange(60) % 3
    w = 30 * rng.normal(size=(3, 64))  # large weights: unscaled targets leave the range
    w -= w.mean(axis=0)  # like a model fitted to mean-centred labels
    res = analytic.distill(from_spec("rff"), w, x, labels, num_classes=3, ipc=4, seed=0, init=init)
    assert res.info["rff_out_of_range_before_scaling"] > 0  # the first targets left the range
    phi = np.asarray(from_spec("rff").features(res.images))
    assert np.max(np.abs(phi)) * np.sqrt(phi.shape[1] / 2) <= analytic.RFF_RANGE_MARGIN + 1e-9
    assert res.info["feature_round_trip_error"] < 1e-9 and res.info["relative_weight_error"] < 1e-7




@pytest.mark.parametrize("spec", ["linear", "fcnn", "fcnn:depth=3,slope=0.3", "rff", "rff:gamma=0.2"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_host_features_agree_with_the_jax_path(spec, precision):
    """NumPy inputs take the host path (no compilation); JAX inputs the jitted one: same numbers, same dtype,
    and the kernel called on NumPy arrays equals the compiled kernel."""
    import jax.numpy as jnp

    from kdistill import precision_scope

    kernel = from_spec(spec)
    x = np.random.default_rng(0).normal(size=(9, 5, 5, 2))
    with precision_scope(precision):
        for dtype in (np.float32, np.float64, np.uint8):
            host = kernel.features(x.astype(dtype))
            jax_path = np.asarray(kernel.features(jnp.asarray(x.astype(dtype))))
            assert isinstance(host, np.ndarray) and host.dtype == jax_path.dtype
            # uint8 pixels (0..255) feed cos large arguments: float32 rounding of A x shows at ~1e-4
            tol = 1e-12 if host.dtype == np.float64 else 2e-5 if dtype != np.uint8 else 5e-4
            np.testing.assert_allclose(host, jax_path, rtol=tol, atol=tol * np.abs(jax_path).max())
        k_host = kernel(x, x[:4])
        k_jax = np.asarray(kernel(jnp.asarray(x), jnp.asarray(x[:4])))
        np.testing.assert_allclose(k_host, k_jax, rtol=1e-10 if precision == "float64" else 1e-4,
                                   atol=1e-10 if precision == "float64" else 1e-4 * np.abs(k_jax).max())


def _deep_linear(rng, d, p, depth=2):
    w1 = rng.normal(size=(p, d)) / np.sqrt(d)
    m = w1
    for _ in range(depth - 1):
        m = rng.normal(size=(p, p)) / np.sqrt(p) @ m
    return w1, m


def test_theorem_5_3_construction_reproduces_w_when_its_conditions_hold():
    """m = k + 1 points for a deep linear map whose conditions hold (p = d): W_S = W from the data itself."""
    rng = np.random.default_rng(3)
    d = p = 7
    k = 3
    w1, m = _deep_linear(rng, d, p, depth=3)
    w = rng.normal(size=(k, p))
    y_s = np.hstack([np.eye(k), rng.normal(size=(k, 1))])  # m = k + 1, rank k
    z = rng.normal(size=(p, k + 1))
    x_s = analytic.deep_linear_theorem_5_3(w1, m, w, y_s, z)
    phi_s = x_s @ m.T  # (m, p) features of the distilled points
    np.testing.assert_allclose(y_s @ np.linalg.pinv(phi_s.T), w, rtol=1e-8, atol=1e-10)


def test_theorem_5_3_refuses_wide_networks_and_range_residual_decides_instead():
    """For p > d the block condition always fails (one-line error naming it); a ridge-fitted W lies in range(M)
    (residual 0, so m = k suffices), a random W does not (no distilled set of any size reproduces it)."""
    rng = np.random.default_rng(4)
    d, p, k = 5, 9, 2
    w1, m = _deep_linear(rng, d, p)
    x = rng.normal(size=(40, d))
    y = rng.normal(size=(40, k))
    phi = x @ m.T
    w_ridge = np.linalg.solve(phi.T @ phi + 0.1 * np.eye(p), phi.T @ y).T
    w_random = rng.normal(size=(k, p))
    y_s = np.hstack([np.eye(k), np.ones((k, 1))])
    for w in (w_ridge, w_random):
        with pytest.raises(InvalidInputError) as exc:
            analytic.deep_linear_theorem_5_3(w1, m, w, y_s)
        assert "rank 5 < p" in str(exc.value) and "\n" not in str(exc.value)
    assert analytic.range_residual(w_ridge, m) < 1e-10
    assert analytic.range_residual(w_random, m) > 0.1
    # m = k from the range: X_S = M^+ W^+ Y_S reproduces the ridge W exactly
    y_k = np.eye(k)
    x_s = (np.linalg.pinv(m) @ np.linalg.pinv(w_ridge) @ y_k).T
    np.testing.assert_allclose(y_k @ np.linalg.pinv((x_s @ m.T).T), w_ridge, rtol=1e-8, atol=1e-10)
    # and no support set reaches the random W: W_S's rows stay in range(M) (many random tries)
    for _ in range(20):
        x_try = rng.normal(size=(6, d))
        w_s = rng.normal(size=(k, 6)) @ np.linalg.pinv((x_try @ m.T).T)
        assert np.linalg.norm(w_s - w_random) >= analytic.range_residual(w_random, m) * np.linalg.norm(w_random) - 1e-9


def test_map_that_is_not_onto_says_so_and_re_solves_the_labels():
    """fcnn wider than its input is injective, not onto (Chen et al. Sec. 5.2): the images miss their targets,
    the method warns in one line, and the least-squares labels reproduce W's outputs on training images
    better than one-hot labels on the same images; the diagnostics are those of the images returned."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3, 3, 1))
    labels = np.arange(80) % 3
    kernel = from_spec("fcnn:width=20")
    phi = np.asarray(kernel.features(x))
    w = _ridge_weights(phi, np.eye(3)[labels] - 1 / 3, lam=0.1)  # centred targets, as runs use
    with pytest.warns(RuntimeWarning, match="cannot reach the target features") as rec:
        res = analytic.distill(kernel, w, x, labels, num_classes=3, ipc=2, seed=0)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    assert res.info["labels_resolved"] and res.info["feature_round_trip_error"] > 1e-3
    assert res.info["fallback"] in str(rec[0].message)
    phi_s = np.asarray(kernel.features(res.images))
    w_s = analytic.weights_from_support(phi_s, res.labels.T, lam=0.0)
    assert res.info["relative_weight_error"] == pytest.approx(np.linalg.norm(w_s - w) / np.linalg.norm(w), rel=1e-6)
    out = np.linalg.norm((w_s - w) @ phi.T) / np.linalg.norm(w @ phi.T)
    one_hot_labels = np.repeat(np.eye(3), 2, axis=1) - 1 / 3
    scale = np.linalg.norm(res.labels) / np.linalg.norm(one_hot_labels)
    w_one_hot = analytic.weights_from_support(phi_s, scale * one_hot_labels, lam=0.0)
    assert out < np.linalg.norm((w_one_hot - w) @ phi.T) / np.linalg.norm(w @ phi.T)
    assert out < 0.9  # something of W survives
    # narrower than the input is onto: exact, no warning
    kernel = from_spec("fcnn:width=6")
    w = _ridge_weights(np.asarray(kernel.features(x)), np.eye(3)[labels] - 1 / 3, lam=0.1)
    import warnings as _w
    with _w.catch_warnings():
        _w.simplefilter("error")
        res = analytic.distill(kernel, w, x, labels, num_classes=3, ipc=2, seed=0)
    assert res.info["relative_weight_error"] < 1e-8


@pytest.mark.parametrize("spec", ["linear", "fcnn", "deep-linear:width=6", "cnn:patch=1", "inn:depth=2"])
def test_more_images_than_features(spec):
    """m > p: D has rank <= p < m, and its rounding-level singular values must not be inverted (they gave
    targets of 1e13); every map still reproduces W, deep-linear wider than d included (Z from its range)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 2, 2, 1))
    labels = np.arange(60) % 2
    kernel = from_spec(spec)
    phi = np.asarray(kernel.features(x))
    w = _ridge_weights(phi, np.eye(2)[labels] - 0.5, lam=0.1)
    for init in ("noise", "real"):
        res = analytic.distill(kernel, w, x, labels, num_classes=2, ipc=5, seed=0, init=init)  # m = 10 > p
        assert res.info["relative_weight_error"] < 1e-7, (init, res.info["relative_weight_error"])
        assert res.info["image_std_ratio"] < 10


def test_closed_form_sets_of_earlier_weight_draws_are_refused(tmp_path):
    """A closed-form fcnn set's images fit one draw of the weights: a set from before the sidecar recorded
    the draw (``kernel_weights``) is refused with one line, not evaluated against other weights; a set
    made now evaluates to its run's accuracy."""
    from kdistill import io
    from kdistill.data import load
    from kdistill.evaluate import evaluate_file
    from kdistill.methods import RunConfig
    from kdistill.runs import run

    ds = load("digits")
    res = run(ds, RunConfig(method="analytic", kernel="fcnn", ipc=1, baseline=False, full_reference=False))
    path = io.save(tmp_path / "now.npz", res.distilled)
    assert res.distilled.meta["kernel_weights"]
    assert evaluate_file(path, ds)["test_accuracy"] == pytest.approx(res.summary["test_accuracy"], abs=1e-12)
    old = io.DistilledSet(res.distilled.images, res.distilled.labels,
                          meta={k: v for k, v in res.distilled.meta.items() if k != "kernel_weights"},
                          arrays=res.distilled.arrays)
    path = io.save(tmp_path / "old.npz", old)
    with pytest.raises(InvalidInputError) as exc:
        evaluate_file(path, ds)
    assert "earlier kdistill" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InvalidInputError, match="earlier kdistill"):
        evaluate_file(path, ds, kernel="fcnn")  # the same kernel named explicitly: still the other weights
    assert evaluate_file(path, ds, kernel="linear")["kernel"] == "linear"  # another kernel: the user's call


@pytest.mark.parametrize("spec", ["fcnn", "cnn", "inn:depth=2"])
def test_float32_runs_build_exact_sets_too(spec):
    """Under precision float32 the construction and its checks still run in float64: an onto map is not
    mistaken for one that cannot reach its targets (float32 features round at ~1e-4)."""
    import warnings as _w

    from kdistill import precision_scope

    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 4, 4, 1)).astype(np.float32)
    labels = np.arange(60) % 3
    kernel = from_spec(spec)
    with precision_scope("float32"):
        phi = np.asarray(kernel.features(x), dtype=np.float64)
        w = _ridge_weights(phi, np.eye(3)[labels] - 1 / 3, lam=0.1)
        with _w.catch_warnings():
            _w.simplefilter("error")
            res = analytic.distill(kernel, w, x, labels, num_classes=3, ipc=2, seed=0)
    assert "fallback" not in res.info and res.info["relative_weight_error"] < 1e-8
