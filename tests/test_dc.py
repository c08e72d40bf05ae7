"""DC (gradient matching): the distance against a hand computation, a matching step that lowers it,
Siamese augmentation inside the step, DC's loop table, and resume equal to an uninterrupted run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdistill.data import load
from kdistill.errors import InvalidInputError
from kdistill.nets import ConvNet
from kdistill.methods import RunConfig, match_distance
from kdistill.runs import run_to_dir
from kdistill.methods import _dc

TINY = ConvNet(width=4, depth=1)


def _digits(n_per_class: int = 12, seed: int = 0):
    ds = load("digits")
    x = ds.x_train.astype(np.float32)
    x = (x - x.mean()) / x.std()
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(np.flatnonzero(ds.y_train == c), n_per_class, replace=False) for c in range(10)])
    return x, ds.y_train, x[idx]  # real: (k, n, 8, 8, 1)


def _torch_layout_distance(g_real, g_syn) -> float:
    """DC's distance written as its code reads PyTorch tensors: conv weights (out, in, kh, kw) and dense
    weights (out, in) as one row per output unit, 1-d tensors skipped, in float64 NumPy."""
    total = 0.0
    for a, b in zip(jax.tree_util.tree_leaves(g_real), jax.tree_util.tree_leaves(g_syn)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.ndim == 1:
            continue
        if a.ndim == 4:  # ours HWIO -> PyTorch OIHW
            a, b = a.transpose(3, 2, 0, 1), b.transpose(3, 2, 0, 1)
        else:  # ours (in, out) -> PyTorch (out, in)
            a, b = a.T, b.T
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        for ra, rb in zip(a, b):
            total += 1.0 - ra @ rb / (np.linalg.norm(ra) * np.linalg.norm(rb) + 1e-6)
    return total


def _torch_free_distance(g_real, g_syn):
    """DC's distance in jax.numpy, layer by layer with explicit transposes to (out, fan-in) rows (for
    gradients with respect to the images; a reference independent of match_distance's reshapes)."""
    total = 0.0
    for a, b in zip(jax.tree_util.tree_leaves(g_real), jax.tree_util.tree_leaves(g_syn)):
        if a.ndim == 1:
            continue
        a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
        b = b.transpose(3, 2, 0, 1) if b.ndim == 4 else b.T
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        dots = jnp.sum(a * b, axis=1)
        total = total + jnp.sum(1.0 - dots / (jnp.sqrt(jnp.sum(a * a, 1)) * jnp.sqrt(jnp.sum(b * b, 1)) + 1e-6))
    return total


def test_match_distance_equals_a_hand_computation_on_a_tiny_network():
    _, _, real = _digits(5)
    params = TINY.init(jax.random.key(0), (8, 8, 1), 10)
    eye = np.eye(10, dtype=np.float32)
    grads = [jax.grad(_dc._xent)(params, TINY, jnp.asarray(real[c]), jnp.asarray(np.tile(eye[c], (5, 1))),
                                 jnp.ones(5, jnp.float32)) for c in (2, 7)]
    ours = float(match_distance(grads[0], grads[1]))
    assert ours == pytest.approx(_torch_layout_distance(grads[0], grads[1]), rel=1e-5)
    # 1-d leaves (biases, norm scale/shift) do not count; identical gradients are at distance 0
    n_units = 4 + 10  # the conv layer's output channels and the head's classes
    assert 0 < ours < 2 * n_units
    assert float(match_distance(grads[0], grads[0])) == pytest.approx(0.0, abs=1e-4)


def test_a_matching_step_lowers_the_distance_on_that_network():
    x, y, real = _digits(12)
    real = real[:4]  # four classes: a small compilation
    syn = real[:, :1].copy()  # ipc 1: one real image per class, matched against the others
    params = TINY.init(jax.random.key(3), (8, 8, 1), 4)
    mask = jnp.ones(real.shape[:2], jnp.float32)

    def distance(images):
        _, _, v = _dc._match_step(jnp.array(images), jnp.zeros(images.shape, jnp.float32), params,
                                  jnp.asarray(real), mask, jax.random.key(0), jnp.float32(0.0), jnp.float32(0.0),
                                  net=TINY, families=None)
        return float(v)

    before = distance(syn)
    new, buf, value = _dc._match_step(jnp.array(syn), jnp.zeros(syn.shape, jnp.float32), params, jnp.asarray(real),
                                      mask, jax.random.key(0), jnp.float32(1e-3), jnp.float32(0.5), net=TINY,
                                      families=None)
    assert float(value) == pytest.approx(before, rel=1e-6)
    assert np.any(np.asarray(new) != syn)
    assert distance(np.asarray(new)) < before
    # the buffer is the gradient of the summed distances (a reference written out here, class by class),
    # and the update is PyTorch's SGD with momentum: buf = 0.5 buf + g, x -= lr buf
    eye = np.eye(4, dtype=np.float32)

    def reference(images):
        total = 0.0
        for c in range(4):
            g_real = jax.grad(_dc._xent)(params, TINY, jnp.asarray(real[c]), jnp.asarray(np.tile(eye[c], (12, 1))),
                                         jnp.ones(12))
            g_syn = jax.grad(_dc._xent)(params, TINY, images[c], jnp.asarray(eye[c][None]), jnp.ones(1))
            total = total + _torch_free_distance(g_real, g_syn)
        return total

    ref_grad = jax.jit(jax.grad(reference))
    g1 = np.asarray(ref_grad(jnp.asarray(syn)))
    np.testing.assert_allclose(np.asarray(buf), g1, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(np.asarray(new), syn - 1e-3 * g1, rtol=1e-5, atol=1e-7)
    newer, buf2, _ = _dc._match_step(jnp.array(new), jnp.array(buf), params, jnp.asarray(real), mask,
                                     jax.random.key(0), jnp.float32(1e-3), jnp.float32(0.5), net=TINY, families=None)
    g2 = np.asarray(ref_grad(jnp.asarray(new)))
    np.testing.assert_allclose(np.asarray(buf2), 0.5 * g1 + g2, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(np.asarray(newer), np.asarray(new) - 1e-3 * (0.5 * g1 + g2), rtol=1e-5, atol=1e-6)


def test_dsa_transforms_real_and_synthetic_batches_alike():
    """With the synthetic images equal to the real batch, each class's gradients coincide only when both
    batches get the same transform: the distance is 0 with Siamese augmentation and not with transforms
    drawn apart (a different key for the synthetic side)."""
    from kdistill.nets import dsa_augment

    _, _, real = _digits(4)
    real = real[:3]  # three classes: one compilation of the step, whichever family a key picks
    params = TINY.init(jax.random.key(1), (8, 8, 1), 3)
    mask = jnp.ones(real.shape[:2], jnp.float32)
    fam = ("crop", "rotate", "color")

    def step(syn, key):  # one compiled step for every call below (same shapes, same families)
        return _dc._match_step(jnp.asarray(syn), jnp.zeros(real.shape, jnp.float32), params, jnp.asarray(real), mask,
                               key, jnp.float32(0.0), jnp.float32(0.0), net=TINY, families=fam)[2]

    for seed in range(3):  # (test_augment.py checks every family's Siamese property on its own)
        assert float(step(real, jax.random.key(seed))) == pytest.approx(0.0, abs=1e-3), seed
    # real != synthetic: the step's mean distance equals that of inputs augmented by hand with each class's key
    syn = real + 0.1

    @jax.jit  # one compilation per batch size, not one eager dispatch per operation
    def grad_of(key, x, t):
        return jax.grad(_dc._xent)(params, TINY, dsa_augment(key, x, fam), t, jnp.ones(x.shape[0]))

    by_hand = []
    for c in range(3):
        kc = jax.random.fold_in(jax.random.key(9), c)
        t = jnp.asarray(np.tile(np.eye(3, dtype=np.float32)[c], (4, 1)))
        by_hand.append(float(match_distance(grad_of(kc, jnp.asarray(real[c]), t), grad_of(kc, jnp.asarray(syn[c]), t))))
    assert float(step(syn, jax.random.key(9))) == pytest.approx(np.mean(by_hand), rel=1e-5)
    # the same images under independent transforms: far from 0 (so the transform changes the gradients, and
    # the agreement above is not that of two unaugmented computations)
    t = jnp.asarray(np.tile(np.eye(3, dtype=np.float32)[2], (4, 1)))
    ga = grad_of(jax.random.key(11), jnp.asarray(real[2]), t)
    gb = grad_of(jax.random.key(12), jnp.asarray(real[2]), t)
    assert float(match_distance(ga, gb)) > 0.05


def test_classes_beyond_one_group_give_the_same_step(monkeypatch):
    """Three classes in groups of 2 (2 + 1) update the images exactly as one group of three."""
    _, _, real = _digits(6)
    real = real[:3]
    syn = real[:, :2].copy()
    params = TINY.init(jax.random.key(2), (8, 8, 1), 3)
    args = (params, jnp.asarray(real), jnp.ones(real.shape[:2], jnp.float32), jax.random.key(0), jnp.float32(1e-3),
            jnp.float32(0.5))

    def step():
        x, buf, v = _dc._match_step(jnp.array(syn), jnp.ones(syn.shape, jnp.float32), *args, net=TINY,
                                    families=None)
        return np.asarray(x), np.asarray(buf), float(v)

    whole = step()
    monkeypatch.setattr(_dc, "_GROUP", 2)
    grouped = step()
    for a, b in zip(whole, grouped):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_dc_loops_follow_dcs_table_and_the_rule_between():
    assert [_dc.dc_loops(i) for i in (1, 10, 20, 30, 40, 50)] == [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15),
                                                                  (50, 10)]
    assert _dc.dc_loops(2) == (2, 50) and _dc.dc_loops(15) == (15, 25) and _dc.dc_loops(100) == (50, 10)


def test_rounds_draw_each_class_at_random_per_round_and_step():
    labels = np.array([0] * 9 + [1] * 2 + [2] * 5)
    pos, mask = _dc._rounds(labels, 3, rounds=4, per_class=3, seed=[1, 2, 3])
    assert pos.shape == mask.shape == (4, 3, 3)
    for r in range(4):
        for c, n in ((0, 3), (1, 2), (2, 3)):
            got = pos[r, c, :n]
            assert np.all(labels[got] == c) and len(set(got)) == n  # the class's images, no repeats in a round
            np.testing.assert_array_equal(mask[r, c], [1] * n + [0] * (3 - n))
    assert len({tuple(pos[r, 0]) for r in range(4)}) > 1  # rounds draw afresh
    again, _ = _dc._rounds(labels, 3, rounds=4, per_class=3, seed=[1, 2, 3])
    other, _ = _dc._rounds(labels, 3, rounds=4, per_class=3, seed=[1, 2, 4])
    np.testing.assert_array_equal(again, pos)  # a function of the seed (and so of the step) ...
    assert not np.array_equal(other, pos)  # ... and another step draws other images
    with pytest.raises(InvalidInputError, match="no image of class"):
        _dc._rounds(labels, 4, rounds=1, per_class=2, seed=0)


def _config(**opts):
    options = dict(steps=4, val_every=2, checkpoint_every=1, dc_width=8, dc_depth=2, batch_real=6, lr=1e-3,
                   outer_loop=2, inner_loop=2, val_epochs=5)
    options.update(opts)
    return RunConfig(method="dc", kernel="rbf", ipc=2, seed=3, full_reference=False, baseline=False, val_size=100,
                     options=options)


def test_support_keeps_the_initial_sets_order_and_labels():
    """Images are grouped by class inside the state; the support set comes back in the init's order."""
    x, y, _ = _digits(2)
    order = np.array([3, 0, 2, 1, 1, 0, 3, 2])  # two of each of 4 classes, interleaved
    x0 = (x[:8] + order[:, None, None, None]).astype(np.float32)  # tell the images apart
    y0 = np.eye(4)[order] - 0.25
    method = _dc.dc_method(num_classes=4, ipc=2, input_shape=(8, 8, 1), width=4, depth=1)
    state = method.init(x0, y0)
    assert state["x"].shape == (4, 2, 8, 8, 1)
    np.testing.assert_array_equal(np.asarray(state["x"][3, 0]), x0[0])  # class 3's first image
    xs, ys = method.support(state)
    np.testing.assert_array_equal(np.asarray(xs), x0)
    np.testing.assert_array_equal(ys, y0)
    with pytest.raises(InvalidInputError, match="2 initial images of each of 4 classes"):
        method.init(x0[:7], y0[:7])


def test_dc_refuses_images_too_small_for_its_depth(tmp_path):
    ds = load("digits")
    with pytest.raises(InvalidInputError, match="too small"):
        run_to_dir(tmp_path / "r", ds, _config(dc_depth=4, steps=1), dataset_ref="digits")
