"""FRePo (Zhou, Nezhadarya & Ba, NeurIPS 2022, arXiv:2206.00719): distillation by neural feature regression.

KIP's objective, with the kernel of a *finite* network that is itself being trained on the distilled set.
Each step takes one network ``f`` from a pool of online models (:class:`kdistill.nets.ModelPool`) and its
features ``phi`` (the flattened output of its last block, what its linear head reads):

    K_SS = phi(X_S) phi(X_S)^T,   K_TS = phi(X_T) phi(X_S)^T,
    pred = K_TS (K_SS + lam I)^-1 Y_S,   lam = reg * tr(K_SS) / m,
    loss = 1/2 mean_i ||pred_i - y_i||^2  +  mean_j max(-(top1_j - top2_j), -1/k)   (the second with learned labels)

where the target batch ``(X_T, Y_T)`` holds real images with centred one-hot labels and the network's
parameters are constants (the gradient reaches ``X_S`` and ``Y_S`` only). The second term is FRePo's label
margin (``lb_margin_th``): it rewards each learned label row for a gap of up to 1/k between its two largest
entries, so that labels keep a clear class. ``X_S, Y_S`` take one optimiser step (LAMB with a cosine decay
to a tenth of the lr over ``steps``); then the same network takes one step of its own training on the new
set (Adam, MSE on ``Y_S``), or is re-initialised once it has taken ``pool_steps + 1`` steps; the next step
draws the next network uniformly from the pool.

The defaults are FRePo's (``script/distill.py`` and ``lib/datadistillation/frepo.py`` of the authors' code,
``yongchaoz/FRePo`` at 43e028a) but for three, changed because a 2-core CPU takes about 0.6 s for a step
that a GPU takes in milliseconds, so an hour is some 5000 steps where FRePo's runs take 500,000: the
target batch (256), the learning rate (3e-3: on MNIST at 1 image per class, 5 minutes of learning left
the finite ConvNet at 61.0% with 3e-4, 67.0% with 3e-3 and 50.6% with 3e-2, DC's protocol, one distillation
seed and two networks each: thin evidence, ``benchmarks/results/frepo_lr.txt``) and the steps:

=====================  ==========================  ===========================================
setting                FRePo                       here
=====================  ==========================  ===========================================
network                Conv 128/256/512, depth 3,  the same (``convnet-frepo``; 28x28 images
                       no norm (``identity``)      padded by 1 where FRePo pads by 3)
pool                   10 models, 101 steps each   the same (ages staggered as FRePo's); PyTorch-style
                                                   initialisation where FRePo's Flax code draws LeCun normal
inner step             Adam 3e-4, MSE, whole set   the same (FRePo: batches of 1000 at most)
outer optimiser        LAMB 3e-4, cosine to 0.1    LAMB 3e-3 (``--opt adam`` for Adam)
ridge                  1e-6 x tr(K_SS) / m         the same
target batch           1024                        256 (a step in 0.6 s instead of 2.5-3.2 s here)
labels                 learned, init (one-hot-1/k) the same, with the label margin
                       / sqrt(k/10)
steps                  500,000 (README runs)       5000 (30 to 55 minutes at ipc 1 here)
augmentation           none while distilling, but  none (no flipped copies: left out for now)
                       flipped copies of the
                       support set on CIFAR
target images          shuffled training images    class-balanced batches (the driver's sampler)
=====================  ==========================  ===========================================

On MNIST an hour of these defaults (this project's 2-core machines have differed about 2x in speed) gives, at
1 image per class (5000 steps, 30 minutes on the faster machine), a set that FRePo's ConvNet learns to 87.1%
under FRePo's protocol (90.2% without its augmentation) and DC's ConvNet to 79.3% under DC's; at 10 images per
class (3000 steps on the faster machine, 1220 on the slower: validations of up to 300 s and 590 s there take a
third of the hour or more), 98.2% under FRePo's protocol and 97.6% under DC's (``benchmarks/results/frepo.md``;
FRePo reports 93.0% and 98.6%, recalled and unconfirmed, after far more steps). On Fashion-MNIST at 1 image per
class (5000 steps) FRePo's ConvNet learns the set to 65.7% (73.4% without its augmentation) and DC's to 67.7%
(KRR 72.0%); at 10 (1273 steps, the slower machine) DC's ConvNet learns it to 79.7% at the label temperature
0.1 (KRR 84.2%, random real 74.5%; FRePo reports 75.6% and 86.2%, unconfirmed).

Validation (every 1000 steps, keeping the best set) trains the evaluation network (``convnet-frepo`` at the
pool's width and depth) on the set for ``val_steps`` steps of Adam at a constant 3e-4 on batches of at most 500
with MSE on the learned labels and no augmentation, FRePo's periodic evaluation (1000 updates), and scores
the held-out split; the final test is KRR under the run's kernel and, as for every set, ``kdistill evaluate
FILE --model convnet|convnet-frepo``. Steps run on one machine: the pool's network changes every step, so a
Dask worker would need the network (1.6 million weights) and return the target features (256 x 4608 floats
at the defaults) per step to save a forward pass of under half a second; not done (``--workers`` is accepted
and unused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import nets
from ..errors import InvalidInputError
from ..evaluate import MAX_WIDTH, accuracy, finite_settings, train
from ..nets import ConvNet, ModelPool
from .iterative import Batch, DriverSettings, IterativeMethod, mse, option, register_iterative, ridge_solve
from ._dc import dc_depth_for
from ._types import Context

__all__ = ["FRePoSettings", "frepo_method", "frepo_loss", "label_margin", "train_and_score"]

OUTER_OPTIMIZERS = ("lamb", "adam")


@dataclasses.dataclass(frozen=True)
class FRePoSettings(DriverSettings):
    """FRePo's settings: the driver's and its own (module docstring, with FRePo's values)."""

    steps: int = 5000
    target_batch: int = 256
    val_every: int = 1000
    checkpoint_every: int = 100
    lr: float = option(3e-3, "learning rate of the images and labels (FRePo: 3e-4), decayed by a cosine to a tenth "
                       "over --steps", min=0, min_exclusive=True, max=10)
    opt: str = option("lamb", "optimiser of the images and labels (FRePo: lamb)", choices=OUTER_OPTIMIZERS)
    reg: float = option(1e-6, "relative ridge lam = reg * tr(K_SS) / m (FRePo: 1e-6)", min=0, min_exclusive=True,
                        cli=False)
    fixed_labels: bool = option(False, "keep the labels fixed (FRePo learns them, with its label margin)")
    pool_size: int = option(10, "online networks in the pool (FRePo: 10)", min=1, max=1000)
    pool_steps: int = option(100, "a pool network is re-initialised after N + 1 training steps (FRePo: 100)",
                             min=1, max=10**7)
    inner_lr: float = option(3e-4, "Adam learning rate of the pool networks (FRePo: 3e-4)", min=0,
                             min_exclusive=True, max=10)
    net_width: int = option(128, "channels of the first block of the pool networks, doubling per block (FRePo: "
                            "128)", min=1, max=4096)
    net_depth: int | None = option(None, "blocks of the pool networks (default: FRePo's 3, fewer for images under "
                                   "16x16)", min=1, max=8)
    val_steps: int = option(1000, "Adam steps of the network trained on the set at each validation (FRePo: "
                            "1000)", min=1, max=10**5)

    def resolve(self, ctx: Context) -> "FRePoSettings":
        """The pool networks' depth for the run's images when not given."""
        depth = dc_depth_for(ctx.x_train.shape[1:3]) if self.net_depth is None else self.net_depth
        return dataclasses.replace(self, net_depth=depth)

    @staticmethod
    def checkpoint_bytes(options: Mapping[str, Any], image_shape: tuple[int, ...], num_classes: int) -> int:
        """Bytes the pool adds to a checkpoint (``kdistill.runs`` counts them before a run starts): each
        network's float32 parameters and its two Adam moments (184 MB at the defaults on MNIST)."""
        depth = int(options.get("net_depth") or dc_depth_for(tuple(image_shape[:2])))
        width = int(options.get("net_width") or 128)
        if width * 2 ** (depth - 1) > MAX_WIDTH:
            return 0  # a network the settings refuse (validate() says why), not a disk-space question
        net = ConvNet(width=width, depth=depth, norm="none", widen=2)
        shapes = jax.eval_shape(lambda k: net.init(k, tuple(image_shape), num_classes), jax.random.key(0))
        weights = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))
        return 3 * 4 * weights * int(options.get("pool_size") or 10)

    def validate(self) -> None:
        super().validate()
        if self.opt not in OUTER_OPTIMIZERS:
            raise InvalidInputError(f"frepo --opt must be one of {', '.join(OUTER_OPTIMIZERS)}, got {self.opt!r}")
        for name in ("lr", "reg", "inner_lr"):
            v = getattr(self, name)
            if not (v > 0 and np.isfinite(v)):
                raise InvalidInputError(f"frepo {name} must be a finite number > 0, got {v}")
        widest = self.net_width * 2 ** ((self.net_depth or 3) - 1)
        if widest > MAX_WIDTH:
            raise InvalidInputError(f"frepo's last block would have {widest} channels (--net-width doubled per "
                                    f"block), more than {MAX_WIDTH}: lower --net-width or --net-depth")


def label_margin(y_s, gap: float | None = None):
    """FRePo's label margin, ``mean_j max(-(top1_j - top2_j), -gap)`` over the label rows ``y_s (m, k)``
    (``gap`` default ``1/k``, FRePo's; RCIG's is ``1/(2k)``): at least ``-gap``, reached by every row whose
    largest entry leads the next by ``gap`` or more."""
    top2 = jax.lax.top_k(y_s, 2)[0]
    gap = 1.0 / y_s.shape[1] if gap is None else gap
    return jnp.mean(jnp.maximum(top2[:, 1] - top2[:, 0], -gap))


def train_and_score(x_s, y_s, x_val, labels_val, *, width: int, depth: int, steps: int, seed: int,
                    lr: float | None = None) -> float:
    """Held-out accuracy of FRePo's evaluation ConvNet (``convnet-frepo`` at ``width`` and ``depth``) trained on
    ``(x_s, y_s)`` for ``steps`` Adam steps at a constant ``lr`` (default the protocol's 3e-4) on batches of at
    most 500, MSE on the labels, no augmentation: the periodic evaluation of FRePo and RCIG."""
    per_epoch = -(-len(x_s) // 500)
    settings = finite_settings("convnet-frepo", width=width, depth=depth, epochs=-(-steps // per_epoch),
                               schedule="constant", warmup=0, augment="none", batch_size=500, lr=lr)
    trained = train(np.asarray(x_s, np.float32), np.asarray(y_s, np.float32), settings, seed=seed)
    return accuracy(settings.net, trained.params, x_val, labels_val)


def frepo_loss(phi_s, y_s, phi_t, y_t, weights, *, reg: float, margin: bool):
    """``(loss, (kernel loss, batch accuracy))`` of FRePo's objective (module docstring) from the features
    ``phi_s (m, d)``, ``phi_t (b, d)``."""
    pred = (phi_t @ phi_s.T) @ ridge_solve(phi_s @ phi_s.T, y_s, reg)
    value = mse(pred, y_t, weights)
    total = value + label_margin(y_s) if margin else value
    return total, (value, jnp.mean(jnp.argmax(pred, axis=1) == jnp.argmax(y_t, axis=1)))


def frepo_method(*, num_classes: int, input_shape: tuple[int, ...], steps: int, lr: float = 3e-3,
                 opt: str = "lamb", reg: float = 1e-6, learn_labels: bool = True, pool_size: int = 10,
                 pool_steps: int = 100, inner_lr: float = 3e-4, width: int = 128, depth: int = 3,
                 val_steps: int = 1000, seed: int = 0) -> IterativeMethod:
    """FRePo as an iterative method.

    State: ``{"params": {"x", ["y"]}, "opt": the outer optimiser's state, "y_fixed": labels, "pool": the
    model pool's state}``. The network of step ``s`` is drawn from ``(seed, s)`` and a network re-initialised
    at step ``s`` from ``fold_in(base, s + pool_size)`` (the pool's first networks take keys ``0 .. pool_size -
    1``), so a resumed run continues as an uninterrupted one.
    """
    net = ConvNet(width=width, depth=depth, norm="none", widen=2)
    net.check_input(input_shape)
    pool = ModelPool(net, size=pool_size, max_age=pool_steps, opt="adam", lr=inner_lr)
    schedule = optax.cosine_decay_schedule(lr, decay_steps=max(int(steps), 1), alpha=0.1)
    optimizer = optax.lamb(schedule) if opt == "lamb" else optax.adam(schedule)
    base = jax.random.fold_in(nets.seed_key(seed), 0x66726570)  # "frep": the stream of pool networks

    def objective(params, y_fixed, net_params, phi_t, y_t, w):
        y_s = params["y"] if learn_labels else y_fixed
        return frepo_loss(net.features(net_params, params["x"]), y_s, phi_t, y_t, w, reg=reg, margin=learn_labels)

    @jax.jit
    def update(params, opt_state, y_fixed, pool_state, i, x_t, y_t, w):
        net_params = pool.take(pool_state, i)
        phi_t = net.features(net_params, x_t)
        (_, (value, acc)), grads = jax.value_and_grad(objective, has_aux=True)(params, y_fixed, net_params, phi_t,
                                                                                y_t, w)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value, acc

    def init(x_s, y_s):
        params = {"x": jnp.asarray(x_s, jnp.float32)}
        if learn_labels:  # FRePo's init_proto: centred one-hot divided by sqrt(k / 10)
            params["y"] = jnp.asarray(y_s, jnp.float32) / np.float32(np.sqrt(num_classes / 10))
        return {"params": params, "opt": optimizer.init(params), "y_fixed": jnp.asarray(y_s, jnp.float32),
                "pool": pool.init(base, tuple(input_shape), num_classes)}

    def step(state, batch: Batch):
        i = int(np.random.default_rng([seed, 0x66726570, batch.step]).integers(pool_size))
        key = jax.random.fold_in(base, batch.step + pool_size)  # past the keys of the pool's first networks
        params, opt_state, value, acc = update(
            state["params"], state["opt"], state["y_fixed"], state["pool"], jnp.asarray(i, jnp.int32),
            jnp.asarray(batch.x, jnp.float32), jnp.asarray(batch.y, jnp.float32),
            jnp.asarray(batch.weights, jnp.float32))
        pool_state = pool.advance(state["pool"], i, params["x"], params["y"] if learn_labels else state["y_fixed"],
                                  key)
        return ({"params": params, "opt": opt_state, "y_fixed": state["y_fixed"], "pool": pool_state},
                {"loss": value, "batch_accuracy": acc})

    def support(state):
        return state["params"]["x"], state["params"]["y"] if learn_labels else state["y_fixed"]

    def validate(x_s, y_s, x_val, labels_val):
        return train_and_score(x_s, y_s, x_val, labels_val, width=width, depth=depth, steps=val_steps, seed=seed)

    return IterativeMethod("frepo", init, step, support, validate, hint="lower --lr or raise --reg")


def _build(s: FRePoSettings, ctx: Context) -> IterativeMethod:
    return frepo_method(num_classes=ctx.num_classes, input_shape=tuple(ctx.x_train.shape[1:]), steps=s.steps,
                        lr=s.lr, opt=s.opt, reg=s.reg, learn_labels=not s.fixed_labels, pool_size=s.pool_size,
                        pool_steps=s.pool_steps, inner_lr=s.inner_lr, width=s.net_width, depth=s.net_depth,
                        val_steps=s.val_steps, seed=ctx.config.seed)


register_iterative("frepo", FRePoSettings, _build, doc="FRePo (Zhou et al. 2022): KIP's loss with the features of "
                   "a pool of finite ConvNets trained on the set as it is learned, learned labels; evaluate the set "
                   "with `kdistill evaluate --model convnet-frepo` or `--model convnet`", precision="float32",
                   kernel="rf-convnet:models=16,width=64,depth=3,stem=0",
                   smoke={"steps": 4, "target_batch": 60, "val_every": 2, "checkpoint_every": 1, "pool_size": 1,
                          "pool_steps": 1, "net_width": 4, "net_depth": 1, "val_steps": 2, "lr": 0.01},  # reset: step 2
                   smoke_kernel="rf-convnet:models=1,width=4,depth=2")
