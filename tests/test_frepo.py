"""FRePo (kdistill.methods._frepo) and what it adds to kdistill.nets and kdistill.evaluate: its loss against a
NumPy computation of the same formula, the model pool's ages, resets and steps against a hand-made Adam step,
FRePo's evaluation schedule against optax's. The iterative contract (resume, determinism, patience, refused
checkpoints) covers frepo from the registry (tests/test_iterative_contract.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdistill import nets
from kdistill.data import load
from kdistill.errors import InvalidInputError
from kdistill.evaluate import finite_settings, frepo_steps, learning_rate, resolve_augment, resolve_epochs
from kdistill.methods._frepo import frepo_loss, frepo_method, label_margin
from kdistill.methods.iterative import Batch

# float32 by construction (the loss test sets x64 itself): run once, in the float64 pass (tests/conftest.py)
pytestmark = pytest.mark.slow


def _numpy_loss(phi_s, y_s, phi_t, y_t, w, reg, margin):
    phi_s, y_s, phi_t, y_t, w = (np.asarray(a, np.float64) for a in (phi_s, y_s, phi_t, y_t, w))
    k_ss = phi_s @ phi_s.T
    m = k_ss.shape[0]
    alpha = np.linalg.solve(k_ss + reg * np.trace(k_ss) / m * np.eye(m), y_s)
    pred = phi_t @ phi_s.T @ alpha
    value = 0.5 * np.mean(w * np.sum((pred - y_t) ** 2, axis=1))
    top = np.sort(y_s, axis=1)[:, ::-1]
    lb = np.mean(-np.minimum(top[:, 0] - top[:, 1], 1.0 / y_s.shape[1]))
    return value + (lb if margin else 0.0), value


def test_frepo_loss_is_the_numpy_formula_on_a_tiny_network():
    rng = np.random.default_rng(0)
    net = nets.ConvNet(width=4, depth=2, norm="none", widen=2)
    params = net.init(nets.seed_key(1), (8, 8, 1), 3)
    x_s, x_t = rng.normal(size=(6, 8, 8, 1)), rng.normal(size=(9, 8, 8, 1))
    phi_s, phi_t = (np.asarray(net.features(params, jnp.asarray(a, jnp.float32))) for a in (x_s, x_t))
    assert phi_s.shape == (6, 2 * 2 * 8)  # 8x8 -> 4x4 -> 2x2, channels 4 then 8
    np.testing.assert_allclose(np.asarray(net.apply(params, jnp.asarray(x_t, jnp.float32))),
                               phi_t @ np.asarray(params["head"]["w"]) + np.asarray(params["head"]["b"]), rtol=1e-5,
                               atol=1e-5)
    y_s = np.eye(3)[[0, 1, 2, 0, 1, 2]] - 1 / 3 + rng.normal(scale=0.2, size=(6, 3))
    y_s[0] = [0.5, 0.45, 0.0]  # a row whose margin is under 1/k, where the margin term is active
    y_t = np.eye(3)[rng.integers(0, 3, 9)] - 1 / 3
    w = rng.uniform(0.5, 1.5, 9)
    for margin in (True, False):
        with jax.enable_x64(True):
            total, (value, _) = frepo_loss(*(jnp.asarray(a, jnp.float64) for a in (phi_s, y_s, phi_t, y_t, w)), reg=1e-3,
                                           margin=margin)
        want_total, want_value = _numpy_loss(phi_s, y_s, phi_t, y_t, w, 1e-3, margin)
        np.testing.assert_allclose(float(total), want_total, rtol=1e-9)
        np.testing.assert_allclose(float(value), want_value, rtol=1e-9)
    assert float(label_margin(jnp.asarray([[1.0, 0.0, 0.0]]))) == pytest.approx(-1 / 3)
    assert float(label_margin(jnp.asarray([[0.5, 0.45, 0.0]]))) == pytest.approx(-0.05)


def test_the_pool_staggers_ages_trains_one_network_by_adam_and_resets_it_when_old():
    net = nets.ConvNet(width=4, depth=1, norm="none", widen=2)
    pool = nets.ModelPool(net, size=4, max_age=8, lr=1e-2)
    state = pool.init(nets.seed_key(0), (8, 8, 1), 3)
    assert np.asarray(state["age"]).tolist() == [0, 2, 4, 6]
    firsts = [np.asarray(pool.take(state, i)["head"]["w"]) for i in range(4)]
    assert all(not np.allclose(firsts[0], f) for f in firsts[1:])  # every network its own draw

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(5, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(np.eye(3)[[0, 1, 2, 0, 1]] - 1 / 3, jnp.float32)
    before = pool.take(state, 1)
    grads = jax.grad(lambda p: 0.5 * jnp.mean(jnp.sum((net.apply(p, x) - y) ** 2, axis=1)))(before)
    after = pool.advance(state, 1, x, y, nets.seed_key(9))
    # Adam's first step (bias-corrected moments g and g^2): -lr g / (|g| + eps)
    want = jax.tree.map(lambda p, g: p - 1e-2 * g / (jnp.abs(g) + 1e-8), before, grads)
    for a, b in zip(jax.tree.leaves(pool.take(after, 1)), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert np.asarray(after["age"]).tolist() == [0, 3, 4, 6]
    for i in (0, 2, 3):  # the others untouched
        for a, b in zip(jax.tree.leaves(pool.take(after, i)), jax.tree.leaves(pool.take(state, i))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    at_limit = pool.advance(dict(after, age=after["age"].at[2].set(8)), 2, x, y, nets.seed_key(9))
    assert int(at_limit["age"][2]) == 9  # FRePo's rule: a network trains while its age is at most max_age
    reset = pool.advance(at_limit, 2, x, y, nets.seed_key(9))
    fresh = net.init(nets.seed_key(9), (8, 8, 1), 3)
    for a, b in zip(jax.tree.leaves(pool.take(reset, 2)), jax.tree.leaves(fresh)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert int(reset["age"][2]) == 0 and int(reset["opt"].count[2]) == 0 < int(after["opt"].count[1])
    assert not np.allclose(np.asarray(pool.take(at_limit, 2)["head"]["w"]), np.asarray(fresh["head"]["w"]))
    with pytest.raises(InvalidInputError):
        nets.ModelPool(net, size=0)


def test_frepo_steps_move_the_support_set_and_keep_it_finite():
    digits = load("digits")
    x, y = digits.x_train[:200].astype(np.float32) / 16.0, np.eye(10, dtype=np.float32)[digits.y_train[:200]] - 0.1
    idx = np.concatenate([np.flatnonzero(digits.y_train[:200] == c)[:1] for c in range(10)])
    method = frepo_method(num_classes=10, input_shape=x.shape[1:], steps=4, lr=1e-2, pool_size=1, pool_steps=1,
                          width=4, depth=2)
    state = method.init(x[idx], y[idx])
    x0 = np.asarray(state["params"]["x"]).copy()
    losses = []
    for s in range(4):
        state, metrics = method.step(state, Batch(x[:100], y[:100], np.ones(100, np.float32), np.arange(100), s))
        losses.append(float(metrics["loss"]))
    x_s, y_s = method.support(state)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(np.asarray(x_s)))
    assert not np.allclose(np.asarray(x_s), x0) and not np.allclose(np.asarray(y_s), y[idx])  # images and labels learn
    # one network, two steps then a reset: ages 0 -> 1 -> 2 -> 0 (reset at step 2) -> 1
    assert np.asarray(state["pool"]["age"]).tolist() == [1]


def test_frepos_evaluation_schedule_is_optaxs_warmup_then_cosine():
    s = resolve_epochs(finite_settings("convnet-frepo"), 10)
    assert (s.epochs, s.batch_size, s.optimizer, s.loss, s.warmup) == (1000, 500, "adam", "mse", 500)
    want = optax.join_schedules([optax.linear_schedule(0.0, 3e-4, 500),
                                 optax.cosine_decay_schedule(3e-4, 500, alpha=0.01)], [500])
    for step in (0, 1, 250, 499, 500, 501, 750, 999, 1000):
        assert learning_rate(s, step, 1) == pytest.approx(float(want(step)), rel=1e-5, abs=1e-12)
    assert [frepo_steps(m) for m in (10, 11, 100, 500, 1000, 1001)] == [1000, 2000, 2000, 5000, 10000, 40000]
    assert resolve_epochs(finite_settings("convnet-frepo"), 1000).epochs == 5000  # two batches of 500 per epoch
    assert resolve_epochs(finite_settings("convnet-frepo"), 1500).epochs == 13334  # 3 batches: 40002 >= 40000 steps
    assert resolve_augment("auto", "mnist", "convnet-frepo") == ("frepo", False)
    assert resolve_augment("auto", "fashion_mnist", "convnet-frepo") == ("frepo", False)  # FRePo flips CIFAR only
    assert resolve_augment("auto", "cifar10", "convnet-frepo") == ("frepo", True)
    assert resolve_augment("auto", "fashion_mnist", "convnet") == ("none", True)  # DC's protocol unchanged
    # DC's step schedule is unchanged by the warm-up fields
    dc = finite_settings("convnet", epochs=10)
    assert [learning_rate(dc, k, 2) for k in (0, 9, 10, 19)] == pytest.approx([0.01, 0.01, 0.001, 0.001])


def test_the_disk_guard_counts_the_checkpointed_pool():
    """A FRePo checkpoint holds the pool (184 MB at the defaults on MNIST), which the free-space check before a
    run used to leave out: it now asks for it twice (old and new checkpoint), sized like the pool's own state."""
    from types import SimpleNamespace

    from kdistill.methods import RunConfig
    from kdistill.runs._rundir import _disk_need, _state_bytes

    mnist = SimpleNamespace(image_shape=(28, 28, 1), num_classes=10)
    for options, width, size in (({}, 128, 10), ({"pool_size": 3, "net_width": 16}, 16, 3)):
        pool = nets.ModelPool(nets.ConvNet(width=width, depth=3, norm="none", widen=2), size=size, max_age=100,
                              opt="adam", lr=3e-4)
        state = jax.eval_shape(lambda k: pool.init(k, (28, 28, 1), 10), nets.seed_key(0))
        pool_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(state))
        config = RunConfig(method="frepo", ipc=1, options=options)
        assert pool_bytes * 0.99 <= _state_bytes(config, mnist) <= pool_bytes
        assert _disk_need(config, mnist) >= 2 * pool_bytes
    assert _state_bytes(RunConfig(method="kip", ipc=1), mnist) == 0
