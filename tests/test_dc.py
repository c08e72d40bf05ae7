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
from kdistill.evaluate._models import ConvNet
from kdistill.methods import RunConfig, match_distance, run_to_dir
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
    syn = real[:, :1].copy()  # ipc 1: one real image per class, matched against the others
    params = TINY.init(jax.random.key(3), (8, 8, 1), 10)
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
    # the update is SGD with momentum from a zero buffer: x - lr * gradient
    np.testing.assert_allclose(np.asarray(new), syn - 1e-3 * np.asarray(buf), rtol=1e-6, atol=1e-7)


def test_dsa_transforms_real_and_synthetic_batches_alike():
    """With the synthetic images equal to the real batch, each class's gradients coincide only when both
    batches get the same transform: the distance is 0 with Siamese augmentation and not with transforms
    drawn apart (a different key for the synthetic side)."""
    from kdistill.evaluate._augment import DSA_FAMILIES, dsa_augment

    _, _, real = _digits(4)
    real = real[:3]  # three classes: one compilation of the step, whichever family a key picks
    params = TINY.init(jax.random.key(1), (8, 8, 1), 3)
    mask = jnp.ones(real.shape[:2], jnp.float32)
    for seed in range(4):
        _, _, v = _dc._match_step(jnp.array(real), jnp.zeros(real.shape, jnp.float32), params, jnp.asarray(real),
                                  mask, jax.random.key(seed), jnp.float32(0.0), jnp.float32(0.0), net=TINY,
                                  families=DSA_FAMILIES)
        assert float(v) == pytest.approx(0.0, abs=1e-3), seed
    # the same images under independent transforms: far from 0
    t = jnp.asarray(np.tile(np.eye(3, dtype=np.float32)[2], (4, 1)))
    ga = jax.grad(_dc._xent)(params, TINY, dsa_augment(jax.random.key(11), jnp.asarray(real[2]), ("crop",)), t,
                             jnp.ones(4))
    gb = jax.grad(_dc._xent)(params, TINY, dsa_augment(jax.random.key(12), jnp.asarray(real[2]), ("crop",)), t,
                             jnp.ones(4))
    assert float(match_distance(ga, gb)) > 0.05


def test_dc_loops_follow_dcs_table_and_the_rule_between():
    assert [_dc.dc_loops(i) for i in (1, 10, 20, 30, 40, 50)] == [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15),
                                                                  (50, 10)]
    assert _dc.dc_loops(2) == (2, 50) and _dc.dc_loops(15) == (15, 25) and _dc.dc_loops(100) == (50, 10)


def test_rounds_split_the_batch_per_class_and_reuse_a_small_class():
    from kdistill.methods import Batch

    labels = np.array([0] * 5 + [1] * 2)
    x = np.arange(7, dtype=np.float32).reshape(7, 1, 1, 1)
    batch = Batch(x=x, y=np.eye(2)[labels], weights=np.ones(7), indices=np.arange(7), step=0)
    real, mask = _dc._rounds(batch, 2, rounds=2, per_class=3)
    assert real.shape == (2, 2, 3, 1, 1, 1)
    np.testing.assert_array_equal(real[:, 0, :, 0, 0, 0], [[0, 1, 2], [3, 4, 0]])  # class 0, cyclic
    np.testing.assert_array_equal(real[:, 1, :2, 0, 0, 0], [[5, 6], [6, 5]])  # class 1: 2 images, padded
    np.testing.assert_array_equal(mask, [[[1, 1, 1], [1, 1, 0]], [[1, 1, 1], [1, 1, 0]]])
    with pytest.raises(InvalidInputError, match="no image of class"):
        _dc._rounds(batch, 3, rounds=1, per_class=2)


def _config(**opts):
    options = dict(steps=4, val_every=2, checkpoint_every=1, dc_width=8, dc_depth=2, batch_real=6, lr=1e-3,
                   outer_loop=2, inner_loop=2, val_epochs=5)
    options.update(opts)
    return RunConfig(method="dc", kernel="rbf", ipc=2, seed=3, full_reference=False, baseline=False, val_size=100,
                     options=options)


@pytest.mark.slow
def test_interrupt_then_resume_equals_uninterrupted(tmp_path):
    """Two rounds per iteration with network training between them (the state the checkpoint must carry:
    images and their momentum); stopped after iteration 2 of 4, resumed, it ends where the whole run does."""
    ds = load("digits")
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_to_dir(full, ds, _config(), dataset_ref="digits")

    def stop(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_to_dir(cut, ds, _config(), dataset_ref="digits", on_checkpoint=stop)
    assert (cut / "checkpoint.npz").exists() and not (cut / "summary.json").exists()
    run_to_dir(cut, ds, _config(), dataset_ref="digits", resume=True)
    a, b = np.load(full / "distilled.npz"), np.load(cut / "distilled.npz")
    np.testing.assert_allclose(b["images"], a["images"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(b["labels"], a["labels"])
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (full, cut))
    assert hb["step"] == ha["step"]
    np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-6)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["method_info"]["outer_loop"] == 2 and summary["precision"] == "float32"


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
