"""The published finite-network protocols of the kernel line.

RFAD's (``convnet-rfad``): He-normal initialisation, centred training with decay towards the initial weights,
PyTorch's MSE over RFAD's label scale, validation with patience, RFAD's tuned settings by dataset and set size,
and ``kdistill evaluate --model convnet-rfad``. KIP's (``convnet-kip``): its Gaussian standard
parameterisation and its learning rate from the empirical NTK at initialisation.

Each check compares with something computed another way: sample moments of the initialisation, the loss and
the first SGD step written out from RFAD's formula, a validation score recomputed from the returned network,
a run in one piece against the same run in pieces, the NTK's top eigenvalue from an explicit Jacobian, and
gradient descent on a linear model just below and above the estimated learning rate.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner
from jax.flatten_util import ravel_pytree

from _helpers import error_line, tiny_digits
from kdistill import nets
from kdistill.cli import cli
from kdistill.data import load
from kdistill.errors import InvalidInputError
from kdistill.evaluate import (finite_accuracy, finite_evaluate_file, finite_settings, make_model, rfad_hypers, train,
                               validation_split)


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.fixture(scope="module")
def tiny(digits):
    """20 standardized digits images (2 per class), centred one-hot labels, 300 held-out training images."""
    x, y, _, _, _, x_held, y_held = tiny_digits(digits, held_out=300)
    return x, y, x_held, y_held


def test_he_initialisation_moments():
    net = make_model("convnet-rfad", width=256, depth=2)
    assert make_model("convnet-rfad").width == 1024 and net.norm == "none" and net.parameterization == "he"
    p = net.init(jax.random.key(3), (8, 8, 4), 10)
    for layer, fan_in in ((p["blocks"][0], 9 * 4), (p["blocks"][1], 9 * 256)):
        w, b = np.asarray(layer["w"]), np.asarray(layer["b"])
        assert abs(w.mean()) < 0.05 * math.sqrt(2 / fan_in)
        assert w.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)  # N(0, 2 / fan_in)
        assert b.std() == pytest.approx(0.1, rel=0.15)  # conv biases N(0, 0.1^2)
    fan_in = 2 * 2 * 256
    head = p["head"]
    assert np.asarray(head["w"]).std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert np.abs(np.asarray(head["b"])).max() <= 1 / math.sqrt(fan_in)  # PyTorch's uniform dense bias
    with pytest.raises(InvalidInputError, match="parameterization"):
        nets.ConvNet(parameterization="lecun")


def test_centred_loss_and_first_step_follow_rfads_formula(tiny):
    x, y, _, _ = tiny
    net = make_model("convnet-rfad", width=4, depth=2)
    params = nets.init_params(jax.random.key(0), (8, 8, 1), 10, net=net)
    anchor = jax.tree.map(jnp.copy, params)
    s, wd, lr = 1 / 8, 0.02, 0.3
    t = jnp.asarray(y)
    # at the initial weights the centred output is 0: RFAD's loss is the labels' mean square
    idx, mask = jnp.arange(20), jnp.ones(20)
    got = nets.loss_value(params, net, "mse-mean", jnp.asarray(x), t, mask, anchor, s)
    assert float(got) == pytest.approx(float(np.mean(y ** 2)), rel=1e-6)
    # move away from the anchor, then one SGD step (momentum buffer empty) against RFAD's loss written out:
    # mean((f - f0 - ls y)^2) / ls^2 + wd' ||p - p0||^2 with wd' = wd / 2 (this package's decay is a gradient term)
    moved = jax.tree.map(lambda a: a * 1.1 + 0.01, params)

    def rfad_loss(p):
        f = net.apply(p, jnp.asarray(x)) - net.apply(anchor, jnp.asarray(x))
        ls = 1 / s
        decay = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(anchor)))
        return jnp.mean((f - ls * t) ** 2) / ls ** 2 + 0.5 * wd * decay

    g = jax.jit(jax.grad(rfad_loss))(moved)
    want = jax.tree.map(lambda p, d: p - lr * d, moved, g)
    state = nets.init_optimizer("sgd", moved, learning_rate=lr, momentum=0.9, weight_decay=0.0)
    moved_copy = jax.tree.map(jnp.copy, moved)
    new, _, value = nets.train_step(moved_copy, state, jnp.asarray(x), t, idx, mask, jax.random.key(1),
                                    jnp.float32(lr), anchor, jnp.float32(s), jnp.float32(wd), net=net,
                                    loss="mse-mean", opt="sgd")
    decay = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(anchor)))
    assert float(value) == pytest.approx(float(jax.jit(rfad_loss)(moved)) - 0.5 * wd * decay, rel=1e-5)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # the anchor's logits computed once for the stored images (what run_epochs passes without augmentation) and
    # indexed by a shuffled batch: the same step as the anchor run on the batch
    order = jnp.asarray(np.random.default_rng(0).permutation(20))
    logits = jnp.asarray(nets.predict(net, anchor, x), jnp.asarray(x).dtype)
    steps = [nets.train_step(jax.tree.map(jnp.copy, moved), nets.init_optimizer("sgd", moved, learning_rate=lr,
                                                                                 momentum=0.9, weight_decay=0.0),
                             jnp.asarray(x), t, order, mask, jax.random.key(1), jnp.float32(lr), anchor,
                             jnp.float32(s), jnp.float32(wd), *extra, net=net, loss="mse-mean", opt="sgd")
             for extra in ((), (logits,))]
    assert float(steps[1][2]) == pytest.approx(float(steps[0][2]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(steps[1][0]), jax.tree.leaves(steps[0][0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_run_in_pieces_equals_one_run(tiny):
    x, y, _, _ = tiny
    s = finite_settings("convnet-rfad", width=4, depth=2, lr=1.0)
    net = s.net
    outs = []
    for pieces in ((6,), (2, 4)):
        params = nets.init_params(jax.random.key(0), (8, 8, 1), 10, net=net)
        anchor = jax.tree.map(jnp.copy, params)
        state = nets.init_optimizer("sgd", params, learning_rate=1.0, momentum=0.9)
        done = 0
        for n in pieces:
            params, state, _ = nets.run_epochs(params, state, jnp.asarray(x), jnp.asarray(y), key=jax.random.key(5),
                                               epochs=n, batch=7, net=net, loss="mse-mean", first_epoch=done,
                                               anchor=anchor, scale=0.125, anchor_decay=0.01, augment="dc")
            done += n
        outs.append(params)
    for a, b in zip(*(jax.tree.leaves(o) for o in outs)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_validation_keeps_the_best_network_and_stops_after_patience(tiny):
    x, y, x_val, y_val = tiny
    s = finite_settings("convnet-rfad", width=8, depth=2, lr=3.0, steps=400, val_every=20, patience=60)
    r = train(x, y, s, seed=0, x_val=x_val, y_val=y_val)
    assert r.best_step % 20 == 0 and r.steps_run % 20 == 0
    # the score of the network returned, recomputed from it, is the one recorded, and it is the best seen
    assert r.accuracy(x_val, y_val) == pytest.approx(r.val_accuracy, abs=1e-12)
    assert r.val_accuracy > 0.3
    assert r.steps_run == 400 or r.steps_run - r.best_step >= 60
    assert r.steps_run - r.best_step <= 60 or r.steps_run == 400
    # without patience it runs every step; with the best network kept, its score is at least the last one's
    full = train(x, y, finite_settings("convnet-rfad", width=8, depth=2, lr=3.0, steps=200, val_every=20), seed=0,
                 x_val=x_val, y_val=y_val)
    plain = train(x, y, finite_settings("convnet-rfad", width=8, depth=2, lr=3.0, steps=200, val_every=0), seed=0)
    assert full.steps_run == 200 and full.val_accuracy >= plain.accuracy(x_val, y_val)
    np.testing.assert_array_equal(full.losses, plain.losses)  # validation does not change the training
    with pytest.raises(InvalidInputError, match="x_val"):
        train(x, y, s, seed=0)
    with pytest.raises(InvalidInputError, match="patience"):
        finite_settings("convnet-rfad", patience=-1)
    with pytest.raises(InvalidInputError, match="label_scale"):
        finite_settings("convnet-rfad", label_scale=0)


def test_rfad_hypers_follow_rfads_table():
    assert rfad_hypers("mnist", 1) == {"lr": 1e-3, "label_scale": 8.0, "weight_decay": 2e-3}
    assert rfad_hypers("fashion_mnist", 10) == {"lr": 1e-2, "label_scale": 8.0, "weight_decay": 2e-3}
    assert rfad_hypers("fashion_mnist", 50) == {"lr": 1e-3, "label_scale": 2.0, "weight_decay": 0.0}
    assert rfad_hypers("mnist", 5) == rfad_hypers("mnist", 10)  # the nearest tuned size on a log scale
    assert rfad_hypers("mnist", 2) == rfad_hypers("mnist", 1)
    assert rfad_hypers("digits", 1) == rfad_hypers("cifar10", 1)  # untuned datasets: CIFAR-10's


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--method", "random", "--ipc", "1", "--kernel",
                                 "linear", "--no-full", "--out", str(out), "--seed", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def test_cli_evaluate_convnet_rfad_matches_the_api(run_dir, digits):
    f = str(run_dir / "distilled.npz")
    args = ["evaluate", f, "--dataset", "digits", "--model", "convnet-rfad", "--width", "4", "--epochs", "40",
            "--seeds", "1", "--json"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    api = finite_evaluate_file(f, digits, model="convnet-rfad", seeds=1, width=4, epochs=40)
    assert res["accuracies"] == api["accuracies"] and res["best_steps"] == api["best_steps"]
    st = res["settings"]
    # digits is a dataset RFAD did not tune: CIFAR-10's settings at 1 image per class; RFAD's protocol otherwise
    assert (st["lr"], st["label_scale"], st["weight_decay"]) == (1e-3, 8.0, 0.0)
    assert (st["loss"], st["centering"], st["optimizer"], st["schedule"], st["augment"]) == \
        ("mse-mean", True, "sgd", "constant", "none")
    idx, _ = validation_split(digits)
    assert res["n_val"] == len(idx) == len(digits.y_train) // 5 and res["steps_run"][0] <= 40
    # a given lr wins over RFAD's
    api = finite_evaluate_file(f, digits, model="convnet-rfad", seeds=1, width=4, epochs=3, lr=0.05)
    assert api["settings"]["lr"] == 0.05 and api["settings"]["label_scale"] == 8.0
    line = error_line(CliRunner().invoke(cli, args[:-1] + ["--loss", "hinge"]))
    assert "hinge" in line


def test_finite_accuracy_reports_validation(tiny, digits):
    x, y, x_val, y_val = tiny
    res = finite_accuracy(x, y, x_val, y_val, model="convnet-rfad", seeds=2, width=4, depth=2, steps=60,
                          val_every=20, lr=1.0, x_val=x_val, y_val=y_val)
    assert len(res["best_steps"]) == 2 and res["n_val"] == 300
    assert res["accuracies"] == pytest.approx(res["val_accuracies"])  # scored on the same images


def test_kip_network_is_gaussian_standard():
    net = make_model("convnet-kip", width=256, depth=1)
    assert make_model("convnet-kip").width == 1024 and net.stem and net.parameterization == "gaussian"
    p = net.init(jax.random.key(1), (4, 4, 3), 10)
    for layer, fan_in in ((p["stem"], 27), (p["blocks"][0], 9 * 256), (p["head"], 2 * 2 * 256)):
        assert np.asarray(layer["w"]).std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert np.asarray(p["blocks"][0]["b"]).std() == pytest.approx(0.1, rel=0.15)
    s = finite_settings("convnet-kip")
    assert (s.loss, s.momentum, s.weight_decay, s.schedule, s.batch_size, s.lr_ntk, s.epochs, s.steps) == \
        ("mse-mean", 0.9, 2e-3, "cosine", 100, 1.0, None, 5000)
    assert finite_settings("convnet-kip", lr=0.1).lr_ntk == 0.0  # a given lr replaces the estimate


def test_ntk_top_eigenvalue_matches_an_explicit_jacobian(tiny):
    x = np.asarray(tiny[0][:10], np.float32)  # float32 in both passes: the fast convolutions (reverse mode only)
    net = make_model("convnet-kip", width=8, depth=2)
    params = nets.init_params(jax.random.key(2), (8, 8, 1), 10, net=net)
    flat, unravel = ravel_pytree(params)
    jac = jax.jit(jax.jacrev(lambda f: jnp.sum(net.apply(unravel(f), jnp.asarray(x)), -1) / math.sqrt(10)))(flat)
    jac = np.asarray(jac, np.float64)
    top = np.linalg.eigvalsh(jac @ jac.T)[-1]
    assert nets.ntk_top_eigenvalue(net, params, x) == pytest.approx(top, rel=1e-4)
    assert nets.ntk_top_eigenvalue(net, params, x, chunk=4) == pytest.approx(top, rel=1e-4)  # blocks of 4, 4, 2
    assert nets.max_learning_rate(net, params, x, "mse-mean", 10) == pytest.approx(10 * 10 / top, rel=1e-3)
    assert nets.max_learning_rate(net, params, x, "mse", 10) == pytest.approx(2 * 10 / top, rel=1e-3)
    with pytest.raises(InvalidInputError, match="MSE"):
        nets.max_learning_rate(net, params, x, "xent", 10)


def test_estimated_lr_is_the_edge_of_stability_for_a_linear_model():
    """For a linear model (an MLP without hidden layers is affine) the NTK is exact, so plain gradient descent
    on MSE converges just below the estimate and diverges just above it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4, 4, 1)).astype(np.float32)
    y = rng.normal(size=(30, 1)).astype(np.float32)
    net = nets.MLP(width=1, depth=0)
    params = nets.init_params(jax.random.key(0), (4, 4, 1), 1, net=net)
    lr = nets.max_learning_rate(net, params, x, "mse", 1)

    def loss(q):
        return nets.loss_value(q, net, "mse", jnp.asarray(x), jnp.asarray(y), jnp.ones(30))

    @jax.jit
    def final_loss(rate):  # 400 steps of plain gradient descent, in one compiled loop
        step = lambda _, p: jax.tree.map(lambda a, g: a - rate * g, p, jax.grad(loss)(p))  # noqa: E731
        return loss(jax.lax.fori_loop(0, 400, step, params))

    assert float(final_loss(0.95 * lr)) < 1.0 and not float(final_loss(1.05 * lr)) < 1e3


def test_kip_protocol_estimates_its_lr_on_held_out_images(run_dir, digits):
    f = str(run_dir / "distilled.npz")
    res = finite_evaluate_file(f, digits, model="convnet-kip", seeds=2, width=8, depth=2, epochs=5)
    idx, _ = validation_split(digits)
    net = make_model("convnet-kip", width=8, depth=2)
    from kdistill.evaluate._file import preprocessor_for
    from kdistill import io
    x_sample = preprocessor_for(io.load(f), digits, path=f).apply(digits.x_train[idx[:50]])
    for seed, lr in enumerate(res["lrs"]):
        key_init = jax.random.split(nets.seed_key(seed))[0]
        params = nets.init_params(key_init, (8, 8, 1), 10, net=net)
        assert lr == pytest.approx(nets.max_learning_rate(net, params, x_sample, "mse-mean", 10), rel=1e-6)
    assert res["settings"]["lr"] is None and res["lrs"][0] != res["lrs"][1]
    given = finite_evaluate_file(f, digits, model="convnet-kip", seeds=1, width=8, depth=2, epochs=5, lr=0.01)
    assert "lrs" not in given and given["settings"]["lr"] == 0.01
    with pytest.raises(InvalidInputError, match="x_val"):
        train(np.zeros((10, 8, 8, 1), np.float32), np.eye(10, dtype=np.float32),
              finite_settings("convnet-kip", width=4, depth=1, epochs=1), seed=0)
