"""kdistill.nets: the published architectures, their layers and the optax trainer, against independent references
(PyTorch SGD's update rule written in NumPy, NumPy normalisation and pooling, the parameter counts of the
CIFAR networks DC's code builds on)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdistill import nets
from kdistill.data import load, one_hot
from kdistill.errors import InvalidInputError
from kdistill.nets import _layers

NEW_MODELS = ("mlp", "alexnet", "vgg11", "resnet18")


def _count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def _shapes(name, input_shape, k=10, **kw):
    net = nets.make_model(name, **kw)
    params = jax.eval_shape(lambda key: net.init(key, input_shape, k), jax.random.key(0))
    out = jax.eval_shape(net.apply, params, jax.ShapeDtypeStruct((2,) + input_shape, np.float32))
    return params, out


def test_parameter_counts_match_the_published_networks():
    # ResNet-18 and VGG-11 for CIFAR-10 (kuangliu/pytorch-cifar, whose definitions DC's networks.py adapts;
    # GroupNorm(c, c) has the same 2c parameters as BatchNorm2d): 11,173,962 and 9,231,114
    params, out = _shapes("resnet18", (32, 32, 3))
    assert _count(params) == 11_173_962 and out.shape == (2, 10)
    params, out = _shapes("vgg11", (32, 32, 3))
    assert _count(params) == 9_231_114 and out.shape == (2, 10)
    # DC's MLP on MNIST: 784*128+128 + 128*128+128 + 128*10+10
    params, _ = _shapes("mlp", (28, 28, 1))
    assert _count(params) == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    # DC's AlexNet: a 1-channel 28x28 image padded by 4 and a 3-channel 32x32 image by 2 both end at 4x4x192
    for shape in ((28, 28, 1), (32, 32, 3)):
        params, out = _shapes("alexnet", shape)
        assert params["head"]["w"].shape == (192 * 4 * 4, 10) and out.shape == (2, 10)
        c = shape[-1]
        convs = [(5, c, 128), (5, 128, 192), (3, 192, 256), (3, 256, 192), (3, 192, 192)]
        assert _count(params["convs"]) == sum(k * k * a * b + b for k, a, b in convs)
    # VGG-11 pads a 1-channel image by 3: 28x28 MNIST ends at 1x1x512 like CIFAR
    params, out = _shapes("vgg11", (28, 28, 1))
    assert params["head"]["w"].shape == (512, 10) and out.shape == (2, 10)
    params, out = _shapes("resnet18", (28, 28, 1), width=8)
    assert params["head"]["w"].shape == (64, 10) and out.shape == (2, 10)


def test_models_refuse_what_they_cannot_run():
    with pytest.raises(InvalidInputError, match="too small for vgg11"):
        _shapes("vgg11", (16, 16, 3))
    with pytest.raises(InvalidInputError, match="too small for resnet18"):
        _shapes("resnet18", (8, 8, 1))
    with pytest.raises(InvalidInputError, match="batch norm needs running statistics"):
        nets.ConvNet(norm="batchnorm")
    with pytest.raises(InvalidInputError, match="unknown pooling"):
        nets.ConvNet(pooling="median")
    with pytest.raises(InvalidInputError, match="fixed depth"):
        nets.make_model("vgg11", depth=13)


@pytest.fixture(scope="module")
def digits32():
    """20 digits images (2 per class), standardized and enlarged from 8x8 to 32x32 (each pixel a 4x4 block),
    so that every architecture, VGG-11's five poolings included, runs on them."""
    ds = load("digits")
    idx = np.concatenate([np.flatnonzero(ds.y_train == c)[:2] for c in range(10)])
    x = ds.x_train[idx].astype(np.float32)
    x = (x - x.mean()) / x.std()
    x = np.kron(x, np.ones((1, 4, 4, 1), np.float32))
    return jnp.asarray(x), jnp.asarray(one_hot(ds.y_train[idx], 10, centred=False))


@pytest.mark.parametrize("name", NEW_MODELS)
def test_each_new_model_trains_two_steps_on_digits_and_the_loss_falls(name, digits32):
    x, t = digits32
    net = nets.make_model(name, width=16)  # a quarter (vgg11, resnet18) or an eighth of the published width:
    # the same layers, a fraction of the test suite's time
    key_init, key_train = jax.random.split(nets.seed_key(0))
    params = nets.init_params(key_init, tuple(x.shape[1:]), 10, net=net)
    state = nets.init_optimizer("sgd", params, learning_rate=0.01, momentum=0.9, weight_decay=5e-4)
    # three epochs of one full batch: the losses at the start, after one step and after two
    params, state, losses = nets.run_epochs(params, state, x, t, key=key_train, epochs=3, batch=20, net=net,
                                            loss="xent")
    assert np.all(np.isfinite(losses)) and losses[2] < losses[1] < losses[0], losses


def test_sgd_is_pytorchs_update_rule():
    """Three steps of nets.train_step against PyTorch's SGD written in NumPy, with gradients from jax.grad at
    the same parameters: g = grad + wd p; v = momentum v + g; p = p - lr v (lr changing every step)."""
    net = nets.make_model("mlp", width=6)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((5, 3, 3, 1), dtype=np.float32))
    t = jnp.asarray(np.eye(4, dtype=np.float32)[rng.integers(0, 4, 5)])
    params = nets.init_params(jax.random.key(1), (3, 3, 1), 4, net=net)
    wd, mom, lrs = 0.05, 0.8, (0.3, 0.2, 0.1)
    ref_p = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    ref_v = [np.zeros_like(p) for p in ref_p]
    treedef = jax.tree.structure(params)
    state = nets.init_optimizer("sgd", jax.tree.map(jnp.copy, params), learning_rate=lrs[0], momentum=mom,
                                weight_decay=wd)
    idx, mask = jnp.arange(5), jnp.ones(5)
    for lr in lrs:
        current = jax.tree.unflatten(treedef, [jnp.asarray(p, jnp.float32) for p in ref_p])
        grads = jax.tree.leaves(jax.grad(nets.loss_value)(current, net, "xent", x, t, mask))
        for i, g in enumerate(grads):
            ref_v[i] = mom * ref_v[i] + np.asarray(g, np.float64) + wd * ref_p[i]
            ref_p[i] = ref_p[i] - lr * ref_v[i]
        params, state, _ = nets.train_step(params, state, x, t, idx, mask, jax.random.key(0), jnp.float32(lr),
                                           net=net, loss="xent")
        for got, want in zip(jax.tree.leaves(params), ref_p):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    # momentum_step: the same rule on an array whose buffer the caller keeps
    p0, buf, g = (jnp.asarray(rng.standard_normal(7, dtype=np.float32)) for _ in range(3))
    want_buf = 0.5 * np.asarray(buf) + np.asarray(g)
    want_p = np.asarray(p0) - 0.1 * want_buf
    got_p, got_buf = nets.momentum_step(p0, buf, g, jnp.float32(0.1), jnp.float32(0.5))
    np.testing.assert_allclose(np.asarray(got_buf), want_buf, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_p), want_p, rtol=1e-6)


def test_adam_takes_adams_first_step():
    """Adam's first step is -lr * sign(g) (bias-corrected moments: m/sqrt(v) = g/|g|) up to eps."""
    params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
    grads = {"w": jnp.asarray([0.5, -4.0, 1e-2])}
    state = nets.init_optimizer("adam", params, learning_rate=0.1, momentum=0.9)
    updates, _ = nets.optimizer("adam").update(grads, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * np.sign(np.asarray(grads["w"])), rtol=1e-5)
    with pytest.raises(InvalidInputError, match="unknown optimizer"):
        nets.optimizer("lbfgs")


def test_norms_and_pooling_against_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    scale, shift = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    layer = {"scale": jnp.asarray(scale), "shift": jnp.asarray(shift)}
    g = x.reshape(2, 4, 6, 4, 2)  # 4 groups of 2 channels
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    want = ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * scale + shift
    np.testing.assert_allclose(np.asarray(_layers.group_norm(jnp.asarray(x), layer, 4)), want, rtol=1e-4, atol=1e-5)
    inst = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(_layers.group_norm(jnp.asarray(x), layer, 8)), inst * scale + shift,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(_layers.instance_norm(jnp.asarray(x), layer)), inst * scale + shift,
                               rtol=1e-4, atol=1e-5)
    odd = rng.standard_normal((1, 5, 7, 2)).astype(np.float32)
    want_max = np.array([[[odd[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].max() for c in range(2)] for j in range(3)]
                         for i in range(2)])
    np.testing.assert_array_equal(np.asarray(_layers.max_pool(jnp.asarray(odd)))[0], want_max)
    # a strided 1x1 convolution (ResNet's shortcut) is every other pixel times the matrix
    w = rng.standard_normal((1, 1, 2, 3)).astype(np.float32)
    got = _layers.conv(jnp.asarray(odd), {"w": jnp.asarray(w)}, stride=2, padding=0)
    np.testing.assert_allclose(np.asarray(got), odd[:, ::2, ::2] @ w[0, 0], rtol=1e-5, atol=1e-6)
    assert math.isclose(float(_layers.avg_pool(jnp.ones((1, 3, 3, 1)))[0, 0, 0, 0]), 1.0)
