"""RCIG (Loo, Hasani, Lechner & Rus, ICML 2023, arXiv:2302.06755): distillation by convexified implicit gradients.

Each step takes one network from a pool of online models (:class:`kdistill.nets.ModelPool`), with parameters
``theta0``, and fits to the distilled set ``(X_S, Y_S)`` the model that is linear in its parameters around
``theta0`` (the network's first-order Taylor expansion, without its value at ``theta0``):

    g(x; delta, W) = J(x) delta + phi(x) W,

``J(x) delta`` the directional derivative of the network's outputs along ``delta`` (every weight but the head's,
which ``W`` replaces) and ``phi`` its features at ``theta0`` (the input of its linear head). For fixed
``delta`` the best head is the ridge solution on the set, so with ``A = (phi(X_S) phi(X_S)^T + lam I)^-1`` and
the residual ``r = Y_S - J(X_S) delta`` the inner problem is the quadratic

    L_in(delta) = 1/2 [ tr(r^T A r) + ||delta||^2 ]

(RCIG's scaled by ``lam / (m k)``, which moves neither its minimiser nor the implicit gradient), a convex
problem: its Hessian ``H = J_S^T A J_S + I`` does not depend on ``delta``. The outer loss is the cross-entropy of
the model's temperature-scaled predictions on a batch of real images (``exp(tau) p_T``, ``tau`` learned, the
``platt`` loss) with

    p_T = J(X_T) delta + phi(X_T) phi(X_S)^T A r,

and, with learned labels, RCIG's label margin (FRePo's, at a gap of ``1/(2k)``). The set's gradient is the
implicit-function theorem's: the direct gradient of the outer loss at the solved ``delta`` plus
``-(d^2 L_in / d psi d delta) v`` with ``v = H^-1 (d L_out / d delta)``; each array's implicit part is scaled
down to the norm of its direct part when larger (RCIG's clipping). ``X_S, Y_S, tau`` take one AdaBelief step,
an exponential moving average of them (decay 0.99, debiased) is the set the run keeps, and the pool network
then takes 1 to 15 Adam steps (MSE on ``Y_S``) on the new set, or is re-initialised once past ``pool_steps``.

Sources: the paper and the authors' code (``yolky/RCIG`` at a9fb1fa: ``algorithms.py``, ``models.py``,
``configs_final/depth_3_no_flip.txt`` for MNIST and Fashion-MNIST). Where this differs:

=====================  ==============================  ==========================================
setting                RCIG                            here
=====================  ==============================  ==========================================
network                Conv 128/256/512, depth 3,      the same (``ConvNet(widen=2, norm="none",
                       softplus (beta 60), avg pool,   activation="softplus", parameterization=
                       Flax's init (LeCun normal       "gaussian", w_std=1, b_std=0)``; 28x28 images
                       weights, zero biases)           padded by 1 where RCIG pads the first by 3)
inner solve            20 Adam steps from 0, lr tuned  5 conjugate-gradient steps from 0 (the
                       before the run and every 50     problem is quadratic: no learning rate;
                       steps                           5, not 20: see below)
H^-1 v solve           20 Adam steps, lr tuned         5 conjugate-gradient steps
lam                    5e-4 x m                        the same (``--ridge``)
outer optimiser        AdaBelief 3e-3 (set),           the same
                       3e-2 (temperature); EMA 0.99
target batch           1024                            256 (for a 2-core CPU, as FRePo's here)
pool                   30 models, all new at the       10 models (a checkpoint of 184 MB, not 550),
                       start, 1-15 Adam steps (5e-5)   ages staggered at the start as FRePo's; a
                       a visit, reset after a visit    network past its age is reset in place of
                       that reaches 100 steps          a visit's step (FRePo's rule), then trains
                                                       the visit's remaining steps
flipped copies         of the set on CIFAR-10          not yet (MNIST and Fashion-MNIST have none)
labels                 learned, centred one-hot        the same
steps                  10,000 (CLI default)            5000, for a time-limited run
=====================  ==============================  ==========================================

Five conjugate-gradient steps per solve, not 20, from an equal-wall-clock ablation in one setting on this CPU
(``benchmarks/results/rcig.md``: MNIST, 1 image per class, 15 minutes, distillation seeds 0-2): 5 steps made a step
about 1.45 times cheaper (191-194 steps against 131-134), and each seed's set came out better, by 2.1 to 2.6
points of KRR accuracy and 1.5 to 1.8 points under DC's finite protocol (inside each set's spread over its
networks). Every run was still improving at its last step; 60 minutes, 10 images per class and Fashion-MNIST are
untested.

The convolutions run as XLA's (``conv="xla"``): the linearised model needs forward-mode derivatives, which
kdistill's faster convolution (a custom VJP) does not define; the target batch's backward pass, the step's
largest, goes through the faster one. Validation trains FRePo's evaluation network (ReLU) on the set, as FRePo's
does (RCIG's own evaluation is FRePo's protocol at lr 1e-4, trained 2.5 times as many steps at 10 to 100
images, the last ones at 1% of the lr: :mod:`kdistill.evaluate`; the stand-in is ``kdistill evaluate --model
convnet-frepo --lr 1e-4``). Steps run on one machine (``--workers`` is accepted and unused).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import nets
from ..errors import InvalidInputError
from ..evaluate import MAX_WIDTH
from ..nets import ConvNet, ModelPool
from .iterative import Batch, DriverSettings, IterativeMethod, option, platt, register_iterative
from ._frepo import FRePoSettings, label_margin, train_and_score
from ._types import Context

__all__ = ["RCIGSettings", "rcig_method", "rcig_gradients", "inner_loss", "outer_loss", "solve_inner"]

_TAG = 0x72636967  # "rcig": the stream of pool networks and draws
FLAX_INIT = {"parameterization": "gaussian", "w_std": 1.0, "b_std": 0.0}
"""RCIG's networks start as Flax's defaults: weights N(0, 1 / fan_in) (LeCun normal, untruncated here), zero
biases. (PyTorch's uniform init, ConvNet's default, has a third of that variance per layer: a kernel of the
features some 27 times smaller at depth 3 against the same ridge.)"""


@dataclasses.dataclass(frozen=True)
class RCIGSettings(DriverSettings):
    """RCIG's settings: the driver's and its own (module docstring, with RCIG's values)."""

    steps: int = 5000
    target_batch: int = 256
    val_every: int = 500
    checkpoint_every: int = 100
    lr: float = option(3e-3, "AdaBelief learning rate of the images and labels (RCIG: 3e-3)", min=0,
                       min_exclusive=True, max=10)
    temp_lr: float = option(3e-2, "AdaBelief learning rate of the log-temperature of the outer loss (RCIG: 3e-2)",
                            min=0, min_exclusive=True, max=10)
    ridge: float = option(5e-4, "ridge lam = ridge x (images in the set) on the head and the linearised weights "
                          "(RCIG: 5e-4)", min=0, min_exclusive=True, max=1e6)
    fixed_labels: bool = option(False, "keep the labels fixed (RCIG learns them)")
    inner_steps: int = option(5, "conjugate-gradient steps of the inner solve (RCIG: 20 Adam steps)", min=1,
                              max=10**4)
    hvp_steps: int = option(5, "conjugate-gradient steps of the inverse-Hessian product (RCIG: 20 Adam steps)",
                            min=1, max=10**4)
    no_clip: bool = option(False, "add the implicit gradient unscaled (RCIG scales each array's down to the norm of "
                           "its direct gradient when larger)")
    ema: float = option(0.99, "decay of the moving average of the set that the run keeps (RCIG: 0.99; 0: none)",
                        min=0, max=0.9999)
    pool_size: int = option(10, "online networks in the pool (RCIG: 30)", min=1, max=1000)
    pool_steps: int = option(100, "a pool network is re-initialised after N + 1 training steps (RCIG: 100)",
                             min=1, max=10**7)
    pool_visit_steps: int = option(15, "a drawn pool network then trains 1 .. N Adam steps on the set (RCIG: 15)",
                                   min=1, max=1000)
    pool_lr: float = option(5e-5, "Adam learning rate of the pool networks (RCIG: 5e-5)", min=0, min_exclusive=True,
                            max=10)
    net_width: int = option(128, "channels of the first block of the pool networks, doubling per block (RCIG: "
                            "128)", min=1, max=4096)
    net_depth: int | None = option(None, "blocks of the pool networks (default: RCIG's 3, fewer for images under "
                                   "16x16)", min=1, max=8)
    softplus_beta: float = option(60.0, "sharpness of the pool networks' softplus (RCIG: 60)", min=0,
                                  min_exclusive=True, max=1e4)
    val_steps: int = option(1000, "Adam steps of the network trained on the set at each validation (FRePo's "
                            "periodic evaluation: 1000)", min=1, max=10**5)

    # the pool networks' depth for the run's images when not given, and the bytes the pool adds to a checkpoint
    # (each network's float32 weights and two Adam moments): as FRePo's, whose pool is built alike
    resolve = FRePoSettings.resolve
    checkpoint_bytes = staticmethod(FRePoSettings.checkpoint_bytes)

    def validate(self) -> None:
        super().validate()
        for name in ("lr", "temp_lr", "ridge", "pool_lr", "softplus_beta"):
            v = getattr(self, name)
            if not (v > 0 and np.isfinite(v)):
                raise InvalidInputError(f"rcig {name} must be a finite number > 0, got {v}")
        widest = self.net_width * 2 ** ((self.net_depth or 3) - 1)
        if widest > MAX_WIDTH:
            raise InvalidInputError(f"rcig's last block would have {widest} channels (--net-width doubled per "
                                    f"block), more than {MAX_WIDTH}: lower --net-width or --net-depth")


# ---- the linearised model: any network with ``apply(params, x)``, ``features(params, x)`` and a
# ---- ``params["head"] = {"w", "b"}`` linear head (ConvNet's layout) -----------------------------------------


def _without_head_weights(tree):
    """``tree`` with the head's weights zeroed: the linearised weights ``delta`` leave them to the ridge head."""
    return {**tree, "head": {**tree["head"], "w": jnp.zeros_like(tree["head"]["w"])}}


def _dot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _jvp(net, theta0, x, delta):
    """``J(x) delta``: the derivative of ``net``'s outputs on ``x`` at ``theta0`` along ``delta``."""
    return jax.jvp(lambda p: net.apply(p, x), (theta0,), (delta,))[1]


def _ridge_factor(phi_s, lam):
    m = phi_s.shape[0]
    return jax.scipy.linalg.cho_factor(phi_s @ phi_s.T + lam * jnp.eye(m, dtype=phi_s.dtype), lower=True)


def inner_loss(delta, net, theta0, x_s, y_s, lam):
    """``1/2 [tr(r^T A r) + ||delta||^2]``, ``r = y_s - J(x_s) delta``, ``A = (phi phi^T + lam I)^-1``."""
    factor = _ridge_factor(net.features(theta0, x_s), lam)
    r = y_s - _jvp(net, theta0, x_s, delta)
    return 0.5 * (jnp.vdot(r, jax.scipy.linalg.cho_solve(factor, r)) + _dot(delta, delta))


def outer_loss(delta, psi, net, theta0, y_fixed, phi_t, jvp_t, y_t, w_t, lam, margin: bool):
    """``(loss, batch accuracy)`` of the targets ``y_t (b, k)`` (centred one-hot, weights ``w_t``) under the
    linearised model fitted to the set ``psi = {"x", ["y"], "log_temp"}``, given the target features ``phi_t``
    and ``jvp_t = J(x_t) delta`` (computed outside: their cost is on the large batch)."""
    x_s = psi["x"]
    y_s = psi["y"] if "y" in psi else y_fixed
    phi_s = net.features(theta0, x_s)
    r = y_s - _jvp(net, theta0, x_s, delta)
    pred = jvp_t + (phi_t @ phi_s.T) @ jax.scipy.linalg.cho_solve(_ridge_factor(phi_s, lam), r)
    value = platt(pred, y_t, w_t, psi)
    if margin:
        value = value + label_margin(y_s, 0.5 / y_s.shape[1])
    return value, jnp.mean(jnp.argmax(pred, axis=1) == jnp.argmax(y_t, axis=1))


def _cg(matvec, b, steps: int):
    """``steps`` conjugate-gradient iterations for ``matvec(x) = b`` (symmetric positive definite) from 0, unrolled:
    XLA's CPU backend ran a loop body of network passes about 10 times slower than the same passes unrolled
    (2.2 s against 0.2 s an iteration for RCIG's ConvNet on 10 images). A residual of exactly 0 stops the updates
    (the iterations after it leave ``x`` as it is)."""
    def add(a, c, scale):
        return jax.tree.map(lambda u, w: u + scale * w, a, c)

    x = jax.tree.map(jnp.zeros_like, b)
    r = b
    p = b
    rs = _dot(r, r)
    for _ in range(steps):
        hp = matvec(p)
        php = _dot(p, hp)
        alpha = jnp.where(php > 0, rs / jnp.where(php > 0, php, 1.0), 0.0)
        x = add(x, p, alpha)
        r = add(r, hp, -alpha)
        rs_new = _dot(r, r)
        beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        p = add(r, p, beta)
        rs = rs_new
    return x


def solve_inner(net, theta0, x_s, y_s, lam, steps: int, fast_net=None):
    """``(delta, hessian_product)``: the inner problem's solution after ``steps`` conjugate-gradient steps from 0,
    and ``u -> H u = J^T A J u + u`` (the head's weights held at 0 in both). ``J u`` is a forward-mode product
    through ``net``; ``J^T w`` a backward pass through ``fast_net`` (default ``net``): each product is a few
    passes of the network over the set, at the speed of its fastest convolutions."""
    fast_net = net if fast_net is None else fast_net
    factor = _ridge_factor(net.features(theta0, x_s), lam)
    _, pullback = jax.vjp(lambda p: fast_net.apply(p, x_s), theta0)

    def transpose(w):  # J^T w, without the head's weights
        return _without_head_weights(pullback(w)[0])

    def hessian(u):
        u = _without_head_weights(u)
        ju = _jvp(net, theta0, x_s, u)
        return jax.tree.map(jnp.add, transpose(jax.scipy.linalg.cho_solve(factor, ju)), u)

    b = transpose(jax.scipy.linalg.cho_solve(factor, y_s))
    return _cg(hessian, b, steps), hessian


def rcig_gradients(psi, net, theta0, y_fixed, x_t, y_t, w_t, *, lam, inner_steps: int, hvp_steps: int,
                   clip: bool = True, margin: bool = True, fast_net=None):
    """``(gradient of psi, loss, batch accuracy)``: the implicit-function theorem's gradient of RCIG's outer loss
    with respect to the set ``psi`` (module docstring). ``fast_net``: the same network with faster reverse-mode
    convolutions, for the target batch's backward pass (default ``net``)."""
    fast_net = net if fast_net is None else fast_net
    theta0 = jax.lax.stop_gradient(theta0)
    x_s = psi["x"]
    y_s = psi["y"] if "y" in psi else y_fixed
    delta, hessian = solve_inner(net, theta0, x_s, y_s, lam, inner_steps, fast_net)
    phi_t = fast_net.features(theta0, x_t)
    jvp_t = _jvp(net, theta0, x_t, delta)
    (value, acc), (d_delta, d_psi, d_jvp_t) = jax.value_and_grad(outer_loss, argnums=(0, 1, 6), has_aux=True)(
        delta, psi, net, theta0, y_fixed, phi_t, jvp_t, y_t, w_t, lam, margin)
    # d L / d delta through J(x_t) delta: J(x_t)^T (d L / d jvp_t), one backward pass of the network on x_t
    _, pullback = jax.vjp(lambda p: fast_net.apply(p, x_t), theta0)
    g = _without_head_weights(jax.tree.map(jnp.add, d_delta, pullback(d_jvp_t)[0]))
    v = _cg(hessian, g, hvp_steps)

    def cross(p):  # -v^T dL_in/d delta = (J v)^T A r - v^T delta as a function of the set (the last term is
        # constant): its gradient is minus the mixed second derivative times v
        ys = p["y"] if "y" in p else y_fixed
        phi = net.features(theta0, p["x"])
        r = ys - _jvp(net, theta0, p["x"], delta)
        return jnp.vdot(_jvp(net, theta0, p["x"], v), jax.scipy.linalg.cho_solve(_ridge_factor(phi, lam), r))

    implicit = jax.grad(cross)({k: a for k, a in psi.items() if k != "log_temp"})

    def combine(direct, imp):
        if clip:
            nd, ni = jnp.linalg.norm(direct), jnp.linalg.norm(imp)
            imp = imp * jnp.where(ni > nd, nd / jnp.where(ni > 0, ni, 1.0), 1.0)
        return direct + imp

    grads = {k: combine(d_psi[k], implicit[k]) if k in implicit else d_psi[k] for k in d_psi}
    return grads, value, acc


def rcig_method(*, num_classes: int, input_shape: tuple[int, ...], lr: float = 3e-3, temp_lr: float = 3e-2,
                ridge: float = 5e-4, learn_labels: bool = True, inner_steps: int = 5, hvp_steps: int = 5,
                clip: bool = True, ema: float = 0.99, pool_size: int = 10, pool_steps: int = 100,
                pool_visit_steps: int = 15, pool_lr: float = 5e-5, width: int = 128, depth: int = 3,
                softplus_beta: float = 60.0, val_steps: int = 1000, seed: int = 0) -> IterativeMethod:
    """RCIG as an iterative method.

    State: ``{"params": {"x", ["y"], "log_temp"}, "opt": the outer optimiser's state, "ema": the moving
    average's state, "kept": the averaged set, "y_fixed": labels, "pool": the model pool's state}``. The network
    of step ``s`` and its training steps are drawn from ``(seed, s)``, a network re-initialised at step ``s``
    (visit step ``n``) from ``fold_in(fold_in(base, s + pool_size), n)``: a resumed run continues as an
    uninterrupted one.
    """
    net = ConvNet(width=width, depth=depth, norm="none", widen=2, activation="softplus",
                  softplus_beta=softplus_beta, conv="xla", **FLAX_INIT)
    fast_net = dataclasses.replace(net, conv=None)
    net.check_input(input_shape)
    pool = ModelPool(fast_net, size=pool_size, max_age=pool_steps, opt="adam", lr=pool_lr)
    optimizer = optax.multi_transform({"set": optax.adabelief(lr), "temp": optax.adabelief(temp_lr)},
                                      lambda p: {k: "temp" if k == "log_temp" else "set" for k in p})
    average = optax.ema(ema, debias=True)
    base = jax.random.fold_in(nets.seed_key(seed), _TAG)

    @jax.jit
    def update(params, opt_state, ema_state, y_fixed, pool_state, i, x_t, y_t, w_t):
        theta0 = pool.take(pool_state, i)
        lam = ridge * params["x"].shape[0]
        grads, value, acc = rcig_gradients(params, net, theta0, y_fixed, x_t, y_t, w_t, lam=lam,
                                           inner_steps=inner_steps, hvp_steps=hvp_steps, clip=clip,
                                           margin=learn_labels, fast_net=fast_net)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        kept, ema_state = average.update(params, ema_state)
        return params, opt_state, ema_state, kept, value, acc

    def init(x_s, y_s):
        params = {"x": jnp.asarray(x_s, jnp.float32), "log_temp": jnp.zeros((), jnp.float32)}
        if learn_labels:  # RCIG: centred one-hot, as the driver gives them
            params["y"] = jnp.asarray(y_s, jnp.float32)
        return {"params": params, "opt": optimizer.init(params), "ema": average.init(params),
                "kept": jax.tree.map(jnp.copy, params), "y_fixed": jnp.asarray(y_s, jnp.float32),
                "pool": pool.init(base, tuple(input_shape), num_classes)}

    def step(state, batch: Batch):
        rng = np.random.default_rng([seed, _TAG, batch.step])
        i = int(rng.integers(pool_size))
        visits = int(rng.integers(1, pool_visit_steps + 1))
        params, opt_state, ema_state, kept, value, acc = update(
            state["params"], state["opt"], state["ema"], state["y_fixed"], state["pool"], jnp.asarray(i, jnp.int32),
            jnp.asarray(batch.x, jnp.float32), jnp.asarray(batch.y, jnp.float32),
            jnp.asarray(batch.weights, jnp.float32))
        y_now = params["y"] if learn_labels else state["y_fixed"]
        pool_state = state["pool"]
        for n in range(visits):  # the drawn network trains on the new set (re-initialised once too old)
            key = jax.random.fold_in(jax.random.fold_in(base, batch.step + pool_size), n)
            pool_state = pool.advance(pool_state, i, params["x"], y_now, key)
        return ({"params": params, "opt": opt_state, "ema": ema_state, "kept": kept, "y_fixed": state["y_fixed"],
                 "pool": pool_state}, {"loss": value, "batch_accuracy": acc})

    def support(state):
        kept = state["kept"]
        return kept["x"], kept["y"] if learn_labels else state["y_fixed"]

    def validate(x_s, y_s, x_val, labels_val):
        return train_and_score(x_s, y_s, x_val, labels_val, width=width, depth=depth, steps=val_steps, seed=seed)

    return IterativeMethod("rcig", init, step, support, validate, hint="lower --lr or raise --ridge")


def _build(s: RCIGSettings, ctx: Context) -> IterativeMethod:
    return rcig_method(num_classes=ctx.num_classes, input_shape=tuple(ctx.x_train.shape[1:]), lr=s.lr,
                       temp_lr=s.temp_lr, ridge=s.ridge, learn_labels=not s.fixed_labels, inner_steps=s.inner_steps,
                       hvp_steps=s.hvp_steps, clip=not s.no_clip, ema=s.ema, pool_size=s.pool_size,
                       pool_steps=s.pool_steps, pool_visit_steps=s.pool_visit_steps, pool_lr=s.pool_lr,
                       width=s.net_width, depth=s.net_depth, softplus_beta=s.softplus_beta, val_steps=s.val_steps,
                       seed=ctx.config.seed)


register_iterative("rcig", RCIGSettings, _build, doc="RCIG (Loo et al. 2023): a pool of finite ConvNets, each "
                   "linearised around its weights and fitted to the set in closed form, the set learned by implicit "
                   "gradients, learned labels; evaluate with `kdistill evaluate --model convnet-frepo` or "
                   "`--model convnet`", precision="float32", kernel="rf-convnet:models=16,width=64,depth=3,stem=0",
                   smoke={"steps": 4, "target_batch": 60, "val_every": 2, "checkpoint_every": 1, "pool_size": 1,
                          "pool_steps": 1, "pool_visit_steps": 2, "net_width": 4, "net_depth": 1, "val_steps": 2,
                          "inner_steps": 1, "hvp_steps": 1, "lr": 0.01},
                   smoke_kernel="rf-convnet:models=1,width=4,depth=2")
