"""Distil-Boost (Tukan, Maalouf & Osadchy, arXiv:2307.08086): the coreset inits and the SMART-PICK sampler.

Every statistical claim is checked against an independent computation on data whose answer is known:
a synthetic mixture (one big Gaussian cluster and four small far ones) for the coresets, fixed known
scores for the sampler, compared with what uniform sampling does on the same data. The margins quoted
in the tests were measured with the seeds used here (and held for mixture seeds 0..4).
"""

import json

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import chisquare

from _helpers import error_line
from kdistill.cli import cli
from kdistill.data import fit_preprocessor, load, one_hot
from kdistill.errors import InvalidInputError
from kdistill.kernels import from_spec
from kdistill.methods import KIPSettings, kip
from kdistill.methods.iterative import INITS, SAMPLERS, class_balanced_sampler
from kdistill.methods._coreset import gaussian_coreset_indices, kcenter_indices, kmeans_coreset_indices
from kdistill.methods.iterative._driver import DriverSettings, IterativeMethod, run_iterative
from kdistill.methods._smart_pick import SmartPick, pick_probabilities

CORESETS = ("kcenter", "kmeans-coreset", "gaussian-coreset")


# ---------------------------------------------------------------------------------------------- coresets


def _mixture(seed=0):
    """10-D: 900 points N(0, I) and four clusters of 25 points N(12 e_a, 0.25 I), a = 0..3.
    Returns ``f (1000, 10)`` and the cluster of each point (0: the big one)."""
    rng = np.random.default_rng(seed)
    parts, cluster = [rng.normal(size=(900, 10))], [np.zeros(900, int)]
    for a in range(4):
        centre = np.zeros(10)
        centre[a] = 12.0
        parts.append(centre + 0.5 * rng.normal(size=(25, 10)))
        cluster.append(np.full(25, a + 1))
    return np.concatenate(parts), np.concatenate(cluster)


def _covered(cluster, idx):
    return len(set(cluster[idx].tolist()))


def _kcenter_cost(f, idx):
    """max over points of the Euclidean distance to the nearest chosen point."""
    d2 = np.sum((f[:, None, :] - f[idx][None, :, :]) ** 2, axis=-1)
    return float(np.sqrt(d2.min(axis=1)).max())


def test_kcenter_takes_one_point_per_cluster_and_beats_random_subsets():
    f, cluster = _mixture()
    idx = kcenter_indices(f, 5)
    np.testing.assert_array_equal(idx, kcenter_indices(f, 5))  # deterministic
    assert sorted(cluster[idx].tolist()) == [0, 1, 2, 3, 4]
    # the first point is the one nearest the mean (the docstring's start), the rest are far from it
    assert idx[0] == np.argmin(np.sum((f - f.mean(0)) ** 2, axis=1))
    cost = _kcenter_cost(f, idx)
    random_costs = [_kcenter_cost(f, np.random.default_rng(s).choice(len(f), 5, replace=False)) for s in range(30)]
    print(f"k-center cost: kcenter {cost:.2f}, uniform 5-subsets mean {np.mean(random_costs):.2f} "
          f"(min {np.min(random_costs):.2f})")
    # measured: 6.07 vs mean 13.0 (min 12.1): a random subset misses a small cluster 12 away
    assert cost < 0.6 * np.mean(random_costs) and cost < np.min(random_costs)


def test_kmeans_coreset_estimates_the_cost_better_than_uniform_and_covers_more():
    """The weighted 1-means cost sum_i w_i ||f_i||^2 of a lightweight coreset (Bachem et al. 2018) against
    the uniform estimate n/m sum ||f_i||^2, both against the exact cost over all points."""
    f, cluster = _mixture()
    n, m = len(f), 20
    exact = float(np.sum(f ** 2))
    err_core, err_unif, cov_core, cov_unif = [], [], [], []
    for s in range(100):
        idx, w = kmeans_coreset_indices(f, m, np.random.default_rng(s))
        assert idx.shape == w.shape == (m,) and len(np.unique(idx)) == m and np.all(w > 0)
        err_core.append(abs(np.sum(w * np.sum(f[idx] ** 2, axis=1)) / exact - 1))
        cov_core.append(_covered(cluster, idx))
        u = np.random.default_rng(1000 + s).choice(n, m, replace=False)
        err_unif.append(abs(n / m * np.sum(f[u] ** 2) / exact - 1))
        cov_unif.append(_covered(cluster, u))
    print(f"kmeans-coreset m=20: mean relative cost error {np.mean(err_core):.3f} vs uniform {np.mean(err_unif):.3f}; "
          f"clusters covered {np.mean(cov_core):.2f} vs {np.mean(cov_unif):.2f} of 5")
    # measured: 0.099 vs 0.309; 4.41 vs 2.60
    assert np.mean(err_core) <= 0.5 * np.mean(err_unif)
    assert np.mean(cov_core) >= np.mean(cov_unif) + 1


def test_gaussian_coreset_covers_sparse_clusters_with_consistent_weights():
    """Sensitivity ~ 1 / density favours the small far clusters; the weights 1 / (m q) are inverse draw
    probabilities, so their sum estimates n (exactly in expectation for draws with replacement)."""
    f, cluster = _mixture()
    n, m = len(f), 20
    cov_core, cov_unif, weight_sums = [], [], []
    for s in range(40):
        idx, w = gaussian_coreset_indices(f, m, np.random.default_rng(s))
        assert idx.shape == w.shape == (m,) and len(np.unique(idx)) == m and np.all(w > 0)
        cov_core.append(_covered(cluster, idx))
        weight_sums.append(w.sum() / n)
        cov_unif.append(_covered(cluster, np.random.default_rng(1000 + s).choice(n, m, replace=False)))
    print(f"gaussian-coreset m=20: clusters covered {np.mean(cov_core):.2f} vs uniform {np.mean(cov_unif):.2f} of 5; "
          f"sum of weights / n {np.mean(weight_sums):.3f}")
    # measured: 4.00 vs 2.35; 1.047
    assert np.mean(cov_core) >= np.mean(cov_unif) + 1
    assert abs(np.mean(weight_sums) - 1) < 0.2
    # the sampler is seeded by its generator alone
    a, b = gaussian_coreset_indices(f, m, np.random.default_rng(7)), gaussian_coreset_indices(f, m, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.fixture(scope="module")
def toy():
    """3 classes of 20, 25 and 30 images (6 x 6 x 1, under the projection size, so kcenter needs no key),
    labels shuffled so that "class by class" is a real reordering."""
    rng = np.random.default_rng(11)
    labels = rng.permutation(np.repeat(np.arange(3), [20, 25, 30]))
    x = rng.normal(size=(75, 6, 6, 1)) + labels[:, None, None, None]
    return x, labels


def _row_indices(x, images):
    flat = x.reshape(len(x), -1)
    rows = []
    for img in images.reshape(len(images), -1):
        hits = np.flatnonzero(np.all(flat == img, axis=1))
        assert hits.size == 1, "an init image is not a row of x"
        rows.append(int(hits[0]))
    return np.asarray(rows)


@pytest.mark.parametrize("name", CORESETS)
def test_coreset_init_contract(toy, name):
    x, labels = toy
    ipc = 4
    init = INITS[name]
    images, y = init(x, labels, kernel=None, num_classes=3, ipc=ipc, key=jax.random.key(0))
    assert images.shape == (3 * ipc, 6, 6, 1) and y.shape == (3 * ipc, 3)
    np.testing.assert_array_equal(np.argmax(y, axis=1), np.arange(3 * ipc) // ipc)  # class by class
    np.testing.assert_array_equal(y, one_hot(np.arange(3 * ipc) // ipc, 3, dtype=np.float64))
    rows = _row_indices(x, images)
    assert len(np.unique(rows)) == rows.size  # distinct real images
    np.testing.assert_array_equal(labels[rows], np.arange(3 * ipc) // ipc)  # each of its own class
    again, _ = init(x, labels, kernel=None, num_classes=3, ipc=ipc, key=jax.random.key(0))
    np.testing.assert_array_equal(images, again)
    other, _ = init(x, labels, kernel=None, num_classes=3, ipc=ipc, key=jax.random.key(1))
    if name == "kcenter":
        np.testing.assert_array_equal(images, other)
        # and it is the farthest-first traversal of each class
        for c in range(3):
            members = np.flatnonzero(labels == c)
            expected = members[kcenter_indices(x[members].reshape(len(members), -1), ipc)]
            np.testing.assert_array_equal(rows[c * ipc:(c + 1) * ipc], expected)
    else:
        assert not np.array_equal(images, other)
    with pytest.raises(InvalidInputError, match="class 0 has 20 images in the pool, fewer than ipc=21"):
        init(x, labels, kernel=None, num_classes=3, ipc=21, key=jax.random.key(0))


# -------------------------------------------------------------------------------------------- smart-pick


def _expected_p(phi, groups, floor):
    """The sampling rule written out: per group (1 - floor) phi / sum phi + floor / size."""
    p = np.zeros(len(phi))
    for g in groups:
        p[g] = (1 - floor) * phi[g] / phi[g].sum() + floor / g.size
    return p


def test_pick_probabilities():
    phi = np.array([1.0, 3.0, 0.0, 6.0, 0.0, 0.0, 0.0, 2.0, np.nan, np.inf, -np.inf, 2.0])
    groups = [np.arange(0, 4), np.arange(4, 7), np.arange(7, 12), np.array([], dtype=int)]
    p = pick_probabilities(phi, groups, 0.2)
    for g in groups[:3]:
        assert p[g].sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(p[g] >= 0.2 / g.size - 1e-15)
    np.testing.assert_allclose(p[:4], 0.8 * np.array([1, 3, 0, 6]) / 10 + 0.05, rtol=1e-12)
    np.testing.assert_allclose(p[4:7], np.full(3, 1 / 3), rtol=1e-12)  # all zero: uniform
    # NaN and +-inf count as 0: the same as writing 0 there
    clean = np.where(np.isfinite(phi), phi, 0.0)
    np.testing.assert_array_equal(p, pick_probabilities(clean, groups, 0.2))
    np.testing.assert_allclose(p[7:12], 0.8 * np.array([2, 0, 0, 0, 2]) / 4 + 0.2 / 5, rtol=1e-12)
    assert np.all(np.isfinite(p))
    # entries in no group get 0
    assert pick_probabilities(np.ones(5), [np.array([0, 1])], 0.5)[2:].tolist() == [0.0, 0.0, 0.0]


def _fixed_scores(phi):
    """A method's ``scores`` that ignores the state: the pool's ``x`` are the example indices."""
    return lambda state, x, y: phi[np.asarray(x, dtype=int)]


def _picker(labels, batch, phi, *, k, **kw):
    n = len(labels)
    return SmartPick(labels, batch, num_classes=k, seed=3, x=np.arange(n), targets=one_hot(labels, k),
                     scores=_fixed_scores(phi), every=10**9, **kw)


def test_refreshes_by_elapsed_steps_when_the_batch_is_held():
    """RFAD's ``redraw_every`` R calls the sampler only at multiples of R: scores are refreshed at the first such
    step ``every`` or more after the last refresh (0, 6, 12, ... for R = 3, every 5), not every lcm(R, every)."""
    labels = np.repeat(np.arange(2), 10)
    calls = []
    sp = SmartPick(labels, 4, num_classes=2, seed=0, x=np.arange(20), targets=one_hot(labels, 2), every=5,
                   scores=lambda state, x, y: (calls.append(state), np.ones(len(x)))[1])
    refreshed = []
    for step in range(0, 31, 3):
        sp(step, step)
        refreshed.append(sp.refreshed)
    assert calls == [0, 6, 12, 18, 24, 30]
    assert refreshed == [0, 0, 6, 6, 12, 12, 18, 18, 24, 24, 30]
    # without a held batch: exactly every 5 steps, as before
    sp1 = SmartPick(labels, 4, num_classes=2, seed=0, x=np.arange(20), targets=one_hot(labels, 2), every=5,
                    scores=lambda state, x, y: np.ones(len(x)))
    seen = set()
    for step in range(23):
        sp1(step, None)
        seen.add(sp1.refreshed)
    assert sorted(seen) == [0, 5, 10, 15, 20]


def test_draws_follow_the_probabilities_chi_square():
    k, per, steps, floor = 3, 8, 3000, 0.2
    labels = np.repeat(np.arange(k), per)
    phi = np.random.default_rng(5).gamma(0.7, size=k * per) + 0.01
    sp = _picker(labels, k, phi, k=k, floor=floor)  # one image per class per step
    counts = np.zeros(k * per)
    for s in range(steps):
        idx, w = sp(s, None)
        assert np.bincount(labels[idx], minlength=k).tolist() == [1] * k and w.tolist() == [1.0] * k
        counts[idx] += 1
    p = _expected_p(phi, [np.flatnonzero(labels == c) for c in range(k)], floor)
    for c in range(k):
        g = labels == c
        fit = chisquare(counts[g], p[g] * steps).pvalue
        flat = chisquare(counts[g], np.full(per, steps / per)).pvalue
        print(f"class {c}: chi-square p-value vs P {fit:.3g}, vs uniform {flat:.3g}")
        # measured: 0.97, 0.77, 0.71 vs P; < 1e-300 vs uniform
        assert fit > 1e-3 and flat < 1e-6


def _one_class_draws(phi, batch, steps, **kw):
    n = len(phi)
    sp = _picker(np.zeros(n, int), batch, phi, k=1, **kw)
    return [sp(s, None) for s in range(steps)]


# gamma(0.5) scores: a few examples carry most of the loss (n P ranges 0.10 .. 9.1 with floor 0.1)
SKEWED = np.random.default_rng(1).gamma(0.5, size=50)


def test_biased_draws_overweight_hard_examples_and_inverse_p_weights_undo_it():
    """Without weights the batch mean of phi is far above the uniform mean; weighting the very same draws
    by 1 / (n P), P computed here from the rule, brings it back (so the draws really follow P)."""
    p = _expected_p(SKEWED, [np.arange(50)], 0.1)
    plain, reweighted = [], []
    for idx, w in _one_class_draws(SKEWED, 5, 4000, unbiased=False):
        assert w.tolist() == [1.0] * 5 and len(np.unique(idx)) == 5
        plain.append(np.mean(w * SKEWED[idx]))
        reweighted.append(np.mean(SKEWED[idx] / (50 * p[idx])))
    ratio, fixed = np.mean(plain) / SKEWED.mean(), np.mean(reweighted) / SKEWED.mean()
    print(f"biased batch mean / uniform mean {ratio:.3f}; with 1/(nP) weights {fixed:.3f}")
    # measured: 2.91 and 0.99
    assert ratio > 1.2 and abs(fixed - 1) < 0.05


def test_unbiased_weights_are_inverse_probabilities_within_a_batch():
    p = _expected_p(SKEWED, [np.arange(50)], 0.1)
    for idx, w in _one_class_draws(SKEWED, 5, 50, unbiased=True):
        r = w * p[idx]
        np.testing.assert_allclose(r, r[0], rtol=1e-10)  # w proportional to 1 / P


def test_unbiased_weights_estimate_the_uniform_mean():
    est = [np.mean(w * SKEWED[idx]) for idx, w in _one_class_draws(SKEWED, 5, 4000, unbiased=True)]
    print(f"unbiased batch mean / uniform mean {np.mean(est) / SKEWED.mean():.3f}")
    assert np.mean(est) == pytest.approx(SKEWED.mean(), rel=0.05)


def test_per_class_keeps_uniform_counts_and_global_follows_the_scores():
    k, per, batch = 3, 20, 13  # 13 = 5 + 4 + 4: which class gets 5 changes with the step
    labels = np.random.default_rng(2).permutation(np.repeat(np.arange(k), per))
    phi = np.where(labels == 0, 10.0, 1.0)
    uniform = class_balanced_sampler(labels, batch, num_classes=k, seed=3)
    per_class = _picker(labels, batch, phi, k=k)
    global_ = _picker(labels, batch, phi, k=k, per_class=False)
    shares, seen = [], set()
    for s in range(300):
        want = np.bincount(labels[uniform(s, None)[0]], minlength=k)
        seen.add(tuple(want))
        np.testing.assert_array_equal(np.bincount(labels[per_class(s, None)[0]], minlength=k), want)
        idx, _ = global_(s, None)
        assert idx.size == batch and len(np.unique(idx)) == batch
        shares.append(np.mean(labels[idx] == 0))
    assert len(seen) == 3  # the comparison saw every rotation of the extra image
    # class 0 holds 0.9 * 200/240 + 0.1/3 = 0.78 of the probability (at most 20 of 13 draws fit)
    print(f"global: class 0 share {np.mean(shares):.3f} (per class: 1/3)")
    assert np.mean(shares) > 0.6


def test_smart_pick_needs_a_method_that_scores():
    labels = np.repeat(np.arange(2), 10)
    with pytest.raises(InvalidInputError) as e:
        SmartPick(labels, 4, num_classes=2, seed=0, x=np.zeros((20, 2, 2, 1)), targets=one_hot(labels, 2),
                  scores=None)
    assert "smart-pick" in str(e.value) and "\n" not in str(e.value)
    # through the driver: a method without scores
    method = IterativeMethod("noscore", init=lambda x, y: {"x": x, "y": y}, step=lambda st, b: (st, {"loss": 0.0}),
                             support=lambda st: (st["x"], st["y"]), validate=lambda *a: 0.0)
    x = np.random.default_rng(0).normal(size=(20, 2, 2, 1))
    with pytest.raises(InvalidInputError, match="smart-pick") as e:
        run_iterative(method, x, labels, num_classes=2, ipc=1, seed=0,
                      settings=DriverSettings(steps=2, target_batch=4, val_size=0, sampler="smart-pick"))
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------- the driver: resume


@pytest.fixture(scope="module")
def digits():
    ds = load("digits")
    return ds, fit_preprocessor(ds.x_train).apply(ds.x_train).astype(np.float64)


# pick_every 7 is not aligned with the checkpoints every 5; a candidate pool of 600 of the 1337 images
SMART = KIPSettings(steps=20, lr=0.01, target_batch=100, val_every=5, val_size=100, checkpoint_every=5,
                    sampler="smart-pick", pick_every=7, pick_pool=600)


class _Crash(Exception):
    pass


def _crash_at_10(step):
    if step == 10:
        raise _Crash


def _kip(digits, **kw):
    ds, x = digits
    return kip(from_spec("rbf"), x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=SMART, **kw)


def _timeless(history: dict) -> dict:
    """A run's history without its wall-clock column (val_seconds), which no two runs share."""
    return {k: v for k, v in history.items() if k != "val_seconds"}


def test_smart_pick_kip_is_deterministic_and_resumes_exactly(digits, tmp_path, monkeypatch):
    full = _kip(digits)
    assert full.sampler_seconds > 0 and full.steps_run == 20
    again = _kip(digits)
    np.testing.assert_array_equal(again.images, full.images)
    assert _timeless(again.history) == _timeless(full.history)

    with pytest.raises(_Crash):
        _kip(digits, checkpoint=tmp_path / "c.npz", on_checkpoint=_crash_at_10)
    (tmp_path / "c10.npz").write_bytes((tmp_path / "c.npz").read_bytes())
    resumed = _kip(digits, checkpoint=tmp_path / "c.npz", resume=True)
    assert resumed.history["step"] == list(range(20))
    assert _timeless(resumed.history) == _timeless(full.history)
    np.testing.assert_array_equal(resumed.images, full.images)
    np.testing.assert_array_equal(resumed.labels, full.labels)

    # the sampler's state is what makes this exact: one that forgets it rescores at step 10 (the
    # uninterrupted run drew steps 10..13 by the scores of step 7), so the batches differ
    class Forgetful(SmartPick):
        def load_state_dict(self, state):
            pass

    real_factory = SAMPLERS["smart-pick"]

    def forgetful_factory(*args, **kw):
        sp = real_factory(*args, **kw)
        sp.__class__ = Forgetful
        return sp

    monkeypatch.setitem(SAMPLERS, "smart-pick", forgetful_factory)
    lost = _kip(digits, checkpoint=tmp_path / "c10.npz", resume=True)
    assert lost.history["loss"][:10] == full.history["loss"][:10]
    assert lost.history["loss"][10:] != full.history["loss"][10:]


def test_rfad_scores_each_example_by_its_platt_loss_in_one_draw_that_stays(digits, monkeypatch):
    """RFAD's smart-pick scores: each candidate's cross-entropy of exp(log_temp) x the support set's ridge
    predictions, in the features of one draw of the training networks that no call changes (NumPy
    re-computation; the support set and 150 candidates go through the networks as two blocks)."""
    from kdistill.methods import _rfad, rfad_method
    from kdistill.methods._rfad import rfad_features

    monkeypatch.setattr(_rfad, "SCORE_BLOCK", 100)
    ds, x = digits
    kernel = from_spec("rf-convnet:models=2,width=4,depth=1")
    method = rfad_method(kernel, lr=0.01, reg=5e-3, seed=3)
    x_s, y_s = x[:10], one_hot(ds.y_train[:10], 10) - 0.1
    state = method.init(x_s, y_s)
    state["params"]["log_temp"] = jax.numpy.asarray(0.7)
    cand, labels = x[:150], ds.y_train[:150]
    got = method.scores(state, cand, one_hot(labels, 10))
    # the draw: RFAD's stream of networks (seed 3), folded with the scores' own constant
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), 0x72666164), 0x73636F72)
    feats = rfad_features(kernel)
    phi_both = np.asarray(feats(np.concatenate([x_s, cand]), key=key), np.float64)
    phi_s, phi = phi_both[:10], phi_both[10:]
    k_ss = phi_s @ phi_s.T
    pred = phi @ phi_s.T @ np.linalg.solve(k_ss + 5e-3 * np.trace(k_ss) / 10 * np.eye(10), y_s)
    logits = np.exp(0.7) * pred
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(got, -log_p[np.arange(len(cand)), labels], rtol=1e-8)
    np.testing.assert_array_equal(method.scores(state, cand, one_hot(labels, 10)), got)
    # another support set scores the same candidates otherwise (the scores follow the state)
    other = method.init(x[10:20], one_hot(ds.y_train[10:20], 10) - 0.1)
    assert not np.allclose(method.scores(other, cand, one_hot(labels, 10)), got, rtol=1e-3)


def test_smart_pick_rfad_is_deterministic_and_resumes_exactly(digits, tmp_path, monkeypatch):
    from kdistill.methods import _rfad, rfad_method

    monkeypatch.setattr(_rfad, "SCORE_BLOCK", 100)  # the target batch's shape: compiled once for both
    ds, x = digits
    settings = DriverSettings(steps=12, target_batch=100, val_every=4, val_size=100, checkpoint_every=5,
                              sampler="smart-pick", pick_every=7, pick_pool=300, hold_batch=2)

    def run(**kw):
        method = rfad_method(from_spec("rf-convnet:models=1,width=4,depth=1"), lr=0.01, reg=5e-3, redraw_every=2,
                             learn_labels=True)
        return run_iterative(method, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings, **kw)

    full = run()
    assert full.sampler_seconds > 0 and full.steps_run == 12
    with pytest.raises(_Crash):
        run(checkpoint=tmp_path / "c.npz", on_checkpoint=_crash_at_10)
    resumed = run(checkpoint=tmp_path / "c.npz", resume=True)
    assert _timeless(resumed.history) == _timeless(full.history)
    np.testing.assert_array_equal(resumed.images, full.images)
    np.testing.assert_array_equal(resumed.labels, full.labels)


# ------------------------------------------------------------------------------------------------- CLI


def _cli(*args):
    return CliRunner().invoke(cli, list(args))


CORESET_ARGS = ["distill", "--dataset", "digits", "--method", "coreset", "--ipc", "2", "--kernel", "linear",
                "--no-full", "--no-baseline"]


def test_cli_coreset_is_reproducible_real_images(tmp_path, digits):
    for out in ("a", "b"):
        r = _cli(*CORESET_ARGS, "--init", "kcenter", "--out", str(tmp_path / out))
        assert r.exit_code == 0, r.output
    a, b = np.load(tmp_path / "a" / "distilled.npz"), np.load(tmp_path / "b" / "distilled.npz")
    np.testing.assert_array_equal(a["images"], b["images"])
    assert a["images"].shape == (20, 8, 8, 1)
    np.testing.assert_array_equal(np.argmax(a["labels"], axis=1), np.arange(20) // 2)
    # each image is a (preprocessed) training image of its class
    ds, x = digits
    flat = x.reshape(len(x), -1)
    for i, img in enumerate(a["images"].reshape(20, -1)):
        j = int(np.argmin(np.sum((flat - img) ** 2, axis=1)))
        assert np.max(np.abs(flat[j] - img)) < 1e-5 and ds.y_train[j] == i // 2
    info = json.loads((tmp_path / "a" / "summary.json").read_text())["method_info"]
    assert info["init"] == "kcenter"


def test_cli_coreset_refuses_a_non_coreset_init(tmp_path):
    line = error_line(_cli(*CORESET_ARGS, "--init", "noise", "--out", str(tmp_path / "n")))
    assert "noise" in line and "--init" in line


def test_cli_kip_with_coreset_init_and_smart_pick(tmp_path):
    out = tmp_path / "k"
    r = _cli("distill", "--dataset", "digits", "--method", "kip", "--init", "kmeans-coreset", "--sampler", "smart-pick",
             "--steps", "3", "--target-batch", "100", "--val-size", "100", "--ipc", "1", "--kernel", "linear",
             "--no-full", "--no-baseline", "--out", str(out))
    assert r.exit_code == 0, r.output
    info = json.loads((out / "summary.json").read_text())["method_info"]
    assert info["init"] == "kmeans-coreset" and info["sampler"] == "smart-pick"
    assert info["init_seconds"] > 0 and info["sampler_seconds"] > 0 and info["steps_run"] == 3
    assert json.loads((out / "history.json").read_text())["step"] == [0, 1, 2]


@pytest.mark.parametrize("name", ["kmeans-coreset", "gaussian-coreset", "kcenter"])
@pytest.mark.parametrize("fill", [0.0, 0.7])
def test_every_coreset_init_handles_a_class_of_identical_images(name, fill):
    """A class whose images are all the same (all zero, or one constant) has no spread to sample by:
    every init still returns ipc distinct members of that class (kmeans-coreset crashed here)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4, 4, 1))
    labels = np.repeat(np.arange(3), 20)
    x[labels == 1] = fill  # class 1 degenerate
    images, y = INITS[name](x, labels, num_classes=3, ipc=4, key=jax.random.key(0))
    assert images.shape == (12, 4, 4, 1) and np.array_equal(y.argmax(1), np.repeat(np.arange(3), 4))
    np.testing.assert_array_equal(images[4:8], fill)
    assert np.isfinite(images).all()
