"""RCIG (kdistill.methods._rcig): the implicit gradient against the gradient through an unrolled inner loop and
through the closed-form inner solution, on a tiny network in float64; the linearised model's pieces against
explicit Jacobians. The run contract (determinism, resume, stops) is tests/test_iterative_contract.py's."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdistill import nets
from kdistill.methods._rcig import inner_loss, rcig_gradients, solve_inner

pytestmark = pytest.mark.usefixtures("x64_module")


@dataclasses.dataclass(frozen=True)
class Tiny:
    """x (n, D) -> softplus(x W1 + b1) (H features) -> linear head (2 outputs), in the ConvNet's layout."""

    def init(self, key):
        k = jax.random.split(key, 4)
        return {"blocks": [{"w": jax.random.normal(k[0], (D, H)), "b": 0.1 * jax.random.normal(k[1], (H,))}],
                "head": {"w": jax.random.normal(k[2], (H, 2)), "b": 0.1 * jax.random.normal(k[3], (2,))}}

    def features(self, p, x):
        return jax.nn.softplus(x @ p["blocks"][0]["w"] + p["blocks"][0]["b"])

    def apply(self, p, x):
        return self.features(p, x) @ p["head"]["w"] + p["head"]["b"]


D, H = 2, 3  # inputs, features
P = D * H + H + 2  # the linearised weights: W1, b1 and the head's bias (conjugate gradients solve in P steps)
NET = Tiny()
LAM = 0.3


def _problem(seed: int = 3):
    """Seed 3: the images' implicit gradient is larger than their direct one, the labels' smaller (both
    branches of RCIG's clipping are exercised)."""
    rng = np.random.default_rng(seed)
    theta0 = NET.init(jax.random.key(seed))
    psi = {"x": jnp.asarray(rng.normal(size=(3, D))), "y": jnp.asarray(np.eye(2)[[0, 1, 0]] - 0.5
                                                                         + rng.normal(scale=0.3, size=(3, 2))),
           "log_temp": jnp.asarray(0.2)}
    x_t = jnp.asarray(rng.normal(size=(7, D)))
    y_t = jnp.asarray(np.eye(2)[rng.integers(0, 2, 7)] - 0.5)
    w_t = jnp.asarray(rng.uniform(0.5, 1.5, 7))
    return theta0, psi, x_t, y_t, w_t


def _flat_jacobian(theta0, x):
    """``J (n k, P)``: the outputs' Jacobian in the linearised weights, explicit, columns in the order W1 (row
    major), b1, the head's bias (the head's weights are not linearised)."""
    def f(vec):
        p = {"blocks": [{"w": vec[:D * H].reshape(D, H), "b": vec[D * H:D * H + H]}],
             "head": {"w": theta0["head"]["w"], "b": vec[D * H + H:]}}
        return NET.apply(p, x).reshape(-1)

    at = jnp.concatenate([theta0["blocks"][0]["w"].reshape(-1), theta0["blocks"][0]["b"], theta0["head"]["b"]])
    return jax.jacrev(f)(at)


def _reference_loss(psi, theta0, x_t, y_t, w_t, *, unrolled_steps: int = 0, hold_solution: bool = False):
    """RCIG's outer loss at the inner problem's solution, written out with explicit matrices: the solution by
    a dense solve, or by ``unrolled_steps`` of gradient descent from 0 (differentiated through the loop);
    ``hold_solution``: the solution a constant (the direct gradient's function)."""
    x_s, y_s = psi["x"], psi["y"]
    m, k = y_s.shape
    phi_s, phi_t = NET.features(theta0, x_s), NET.features(theta0, x_t)
    a = jnp.linalg.inv(phi_s @ phi_s.T + LAM * jnp.eye(m))
    j_s = _flat_jacobian(theta0, x_s)  # rows ordered (image, output)
    big_a = jnp.kron(a, jnp.eye(k))  # A acting on the flattened (image, output) residual
    hess = j_s.T @ big_a @ j_s + jnp.eye(j_s.shape[1])
    rhs = j_s.T @ big_a @ y_s.reshape(-1)
    if unrolled_steps:
        step = 1.0 / jnp.linalg.eigvalsh(jax.lax.stop_gradient(hess))[-1]
        delta = jax.lax.fori_loop(0, unrolled_steps, lambda _, d: d - step * (hess @ d - rhs), jnp.zeros_like(rhs))
    else:
        delta = jnp.linalg.solve(hess, rhs)
    if hold_solution:
        delta = jax.lax.stop_gradient(delta)
    jvp_t = (_flat_jacobian(theta0, x_t) @ delta).reshape(-1, k)
    r = y_s - (j_s @ delta).reshape(m, k)
    pred = jvp_t + phi_t @ phi_s.T @ a @ r
    logp = jax.nn.log_softmax(jnp.exp(psi["log_temp"]) * pred, axis=1)
    ce = -jnp.take_along_axis(logp, jnp.argmax(y_t, axis=1)[:, None], axis=1)[:, 0]
    top2 = jax.lax.top_k(y_s, 2)[0]
    margin = jnp.mean(jnp.maximum(top2[:, 1] - top2[:, 0], -0.5 / k))
    return jnp.mean(w_t * ce) + margin


def test_inner_loss_and_its_solution_match_the_explicit_quadratic():
    theta0, psi, _, _, _ = _problem()
    x_s, y_s = psi["x"], psi["y"]
    j_s = _flat_jacobian(theta0, x_s)
    phi_s = NET.features(theta0, x_s)
    big_a = jnp.kron(jnp.linalg.inv(phi_s @ phi_s.T + LAM * jnp.eye(3)), jnp.eye(2))
    delta_flat = jnp.asarray(np.random.default_rng(1).normal(size=j_s.shape[1]))
    # the same vector as a parameter tree: blocks' w, b, then the head's bias; the head's weights 0
    sizes = [D * H, H, 2]
    parts = jnp.split(delta_flat, np.cumsum(sizes)[:-1])
    delta = {"blocks": [{"b": parts[1], "w": parts[0].reshape(D, H)}], "head": {"b": parts[2], "w": jnp.zeros((H, 2))}}
    r = y_s.reshape(-1) - j_s @ delta_flat
    want = 0.5 * (r @ big_a @ r + delta_flat @ delta_flat)
    assert float(inner_loss(delta, NET, theta0, x_s, y_s, LAM)) == pytest.approx(float(want), rel=1e-12)
    # conjugate gradients in as many steps as unknowns: the dense solution
    solved = jax.jit(lambda xs, ys: solve_inner(NET, theta0, xs, ys, LAM, steps=j_s.shape[1])[0])(x_s, y_s)
    hessian = solve_inner(NET, theta0, x_s, y_s, LAM, steps=1)[1]
    dense = jnp.linalg.solve(j_s.T @ big_a @ j_s + jnp.eye(P), j_s.T @ big_a @ y_s.reshape(-1))
    got = jnp.concatenate([solved["blocks"][0]["w"].reshape(-1), solved["blocks"][0]["b"], solved["head"]["b"]])
    np.testing.assert_allclose(np.asarray(got), np.asarray(dense), rtol=1e-8, atol=1e-10)
    assert float(jnp.abs(solved["head"]["w"]).max()) == 0.0
    hd = hessian(delta)
    got_hd = jnp.concatenate([hd["blocks"][0]["w"].reshape(-1), hd["blocks"][0]["b"], hd["head"]["b"]])
    np.testing.assert_allclose(np.asarray(got_hd), np.asarray((j_s.T @ big_a @ j_s + jnp.eye(P)) @ delta_flat),
                               rtol=1e-10)


def test_implicit_gradient_equals_the_gradient_through_the_solved_and_the_unrolled_inner_problem():
    theta0, psi, x_t, y_t, w_t = _problem()
    exact = jax.jit(jax.grad(_reference_loss))(psi, theta0, x_t, y_t, w_t)
    unrolled = jax.jit(jax.grad(lambda p: _reference_loss(p, theta0, x_t, y_t, w_t, unrolled_steps=20_000)))(psi)

    def rcig(hvp_steps, clip):  # P unknowns: conjugate gradients in P steps solve exactly
        return jax.jit(lambda p: rcig_gradients(p, NET, theta0, None, x_t, y_t, w_t, lam=LAM, inner_steps=P,
                                                hvp_steps=hvp_steps, clip=clip, margin=True))(psi)

    got, value, _ = rcig(P, False)
    assert float(value) == pytest.approx(float(_reference_loss(psi, theta0, x_t, y_t, w_t)), rel=1e-10)
    for name in ("x", "y", "log_temp"):
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(exact[name]), rtol=1e-7, atol=1e-10,
                                   err_msg=name)
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(unrolled[name]), rtol=1e-5, atol=1e-8,
                                   err_msg=name)
    # the implicit part matters: the direct gradient alone (the inner solution held fixed) is another one
    direct = jax.jit(jax.grad(lambda p: _reference_loss(p, theta0, x_t, y_t, w_t, hold_solution=True)))(psi)
    for name in ("x", "y"):
        assert not np.allclose(np.asarray(direct[name]), np.asarray(exact[name]), rtol=1e-2), name
    np.testing.assert_allclose(np.asarray(direct["log_temp"]), np.asarray(exact["log_temp"]), rtol=1e-9)
    # RCIG's clipping: an array's implicit part larger than its direct part is scaled to the direct part's norm,
    # a smaller one is left alone (here: the images' is larger, the labels' smaller); the temperature has none
    clipped, _, _ = rcig(P, True)
    np.testing.assert_allclose(np.asarray(clipped["log_temp"]), np.asarray(exact["log_temp"]), rtol=1e-9)
    scaled = []
    for name in ("x", "y"):
        unclipped = exact[name] - direct[name]
        nd, ni = float(jnp.linalg.norm(direct[name])), float(jnp.linalg.norm(unclipped))
        scaled.append(ni > nd)
        want = direct[name] + unclipped * min(1.0, nd / ni)
        np.testing.assert_allclose(np.asarray(clipped[name]), np.asarray(want), rtol=1e-7, atol=1e-10, err_msg=name)
    assert scaled == [True, False], scaled


def test_the_target_batchs_backward_pass_through_the_fast_convolutions_gives_the_same_gradient():
    """rcig_gradients on RCIG's ConvNet (float32): the target batch's pullback through kdistill's fast
    convolutions (custom VJP) against the same through XLA's."""
    net = nets.ConvNet(width=4, depth=2, norm="none", widen=2, activation="softplus", conv="xla")
    theta0 = net.init(jax.random.key(0), (8, 8, 1), 3)
    rng = np.random.default_rng(0)
    psi = {"x": jnp.asarray(rng.normal(size=(3, 8, 8, 1)), jnp.float32),
           "y": jnp.asarray(np.eye(3) - 1 / 3, jnp.float32), "log_temp": jnp.zeros((), jnp.float32)}
    x_t = jnp.asarray(rng.normal(size=(6, 8, 8, 1)), jnp.float32)
    y_t = jnp.asarray(np.eye(3)[rng.integers(0, 3, 6)] - 1 / 3, jnp.float32)
    w_t = jnp.ones(6, jnp.float32)
    runs = [jax.jit(lambda p, fast=fast: rcig_gradients(p, net, theta0, None, x_t, y_t, w_t, lam=0.01, inner_steps=2,
                                                         hvp_steps=2, fast_net=fast))(psi)
            for fast in (None, dataclasses.replace(net, conv=None))]
    assert float(runs[0][1]) == pytest.approx(float(runs[1][1]), rel=1e-5)
    for name in ("x", "y", "log_temp"):
        a, b = np.asarray(runs[0][0][name]), np.asarray(runs[1][0][name])
        assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * np.abs(a).max(), err_msg=name)


def test_the_convnet_linearisation_runs_forward_mode_and_matches_finite_differences():
    """RCIG's ConvNet (softplus, XLA's convolutions): J(x) delta against a central difference of the outputs."""
    net = nets.ConvNet(width=4, depth=2, norm="none", widen=2, activation="softplus", softplus_beta=60.0, conv="xla")
    theta0 = net.init(jax.random.key(0), (8, 8, 1), 3)  # float32: the network computes in float32
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 1)), jnp.float32)
    delta = jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(a.size).normal(size=a.shape), jnp.float32),
                         theta0)
    got = jax.jvp(lambda p: net.apply(p, x), (theta0,), (delta,))[1]
    eps = 1e-3
    up = net.apply(jax.tree.map(lambda a, d: a + eps * d, theta0, delta), x)
    down = net.apply(jax.tree.map(lambda a, d: a - eps * d, theta0, delta), x)
    # float32 differences of a step 1e-3: agreement to about 1% of the outputs' scale
    scale = float(jnp.abs(got).max())
    np.testing.assert_allclose(np.asarray(got), np.asarray((up - down) / (2 * eps)), rtol=0, atol=1e-2 * scale)
    relu = dataclasses.replace(net, activation="relu")
    soft = net.apply(theta0, x)
    assert not np.allclose(np.asarray(soft), np.asarray(relu.apply(theta0, x)), atol=1e-9)  # the activation is used
