"""DC: dataset condensation by gradient matching (Zhao, Mopuri & Bilen, ICLR 2021, arXiv:2006.05929).

The synthetic images are learned so that a network's loss gradients on them match its gradients on
real images, class by class, for networks at many points of their training. One *iteration* of DC
(``steps`` counts them, as DC's ``Iteration`` does) draws a fresh network and then runs ``outer_loop``
rounds; each round

1. for every class c, takes a real batch of that class (``batch_real`` images, DC: 256) and the c images
   of the synthetic set, computes the gradients g_real and g_syn of the cross-entropy loss with respect
   to every weight tensor of the network, and sums their distance

       D(g_real, g_syn) = sum over weight tensors W, over output units o of W:
                          1 - <g_real[o], g_syn[o]> / (|g_real[o]| |g_syn[o]| + 1e-6)

   (DC's layer-wise distance: each output channel's incoming weights as one vector; the 1-d tensors,
   biases and the instance norm's scale and shift, are left out as in DC's code);
2. takes one step of SGD with momentum on the synthetic images along the gradient of that sum
   (differentiating through g_syn: a second-order derivative);
3. except after the last round, trains the network on the synthetic set for ``inner_loop`` epochs
   (SGD, ``lr_net``, momentum 0.5, batches of 256).

The network is DC's ConvNet (``kdistill.nets.ConvNet``: width 128, depth 3, instance norm, ReLU,
average pooling; ``--dc-width``/``--dc-depth`` change it). Defaults are DC's code's (``main.py`` and
``utils.get_loops`` of the authors' repository): 1000 iterations, image learning rate 0.1 with
momentum 0.5, network learning rate 0.01 with momentum 0.5, 256 real images per class, and
(outer_loop, inner_loop) = (1, 1) for ipc 1, (10, 50) for 10, (20, 25) for 20, (30, 20) for 30,
(40, 15) for 40, (50, 10) for 50. Other ipc values (DC defines none) take outer_loop = min(ipc, 50) and
the inner loop of the next tabulated ipc above (ipc 2-9: 50; above 50: 10). The initial set is real
images by default (DC's code defaults to noise and remarks that both end alike; real images give a
CPU hour a better start): ``--init noise`` for DC's.

``--dsa`` applies differentiable Siamese augmentation (Zhao & Bilen, ICML 2021) while matching: for each
class one random transform, the same for its real and synthetic batch, differentiated through; the
network's training between rounds then augments too (a transform per image).

Determinism: networks come from ``fold_in(seed, iteration)`` and the real batches from the driver's
sampler (class-balanced, ``batch_real`` per class), so a resumed run ends where an uninterrupted run
would. The cost is the real batches' gradients: a forward and backward pass through the ConvNet for
``batch_real * classes`` images per round (``benchmarks/results/dc.md`` has seconds per iteration).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import nets
from ..errors import InvalidInputError
from ..evaluate import accuracy, finite_settings, resolve_augment, train
from ..nets import ConvNet, dsa_augment, dsa_strategy
from .iterative import Batch, DriverSettings, IterativeMethod, hidden, option, register_iterative
from ._types import Context

__all__ = ["DCSettings", "dc_loops", "match_distance", "dc_method"]

DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
"""DC's (outer_loop, inner_loop) per ipc (``utils.get_loops`` of the authors' code)."""


def dc_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for ``ipc``: DC's table, else the rule in the module docstring."""
    if ipc in DC_LOOPS:
        return DC_LOOPS[ipc]
    above = [k for k in DC_LOOPS if k > ipc]
    inner = DC_LOOPS[min(above)][1] if above else DC_LOOPS[max(DC_LOOPS)][1]
    return min(ipc, 50), inner


def dc_depth_for(image_hw: tuple[int, ...]) -> int:
    """DC's ConvNet depth for images of ``(h, w)``: DC's 3 (28x28 and 32x32 images), or the deepest network
    whose last instance norm still sees a 4x4 map. On 8x8 digits a depth-3 network normalises 2x2 maps
    (four values per channel, a tiny variance): its gradients are ill-conditioned and matching them drove the
    images away from every class (loss 262 -> 368, validation 62% -> 4% in 10 steps at DC's lr and at a tenth
    of it), while depth 2 learned (validation 72% -> 86%)."""
    side = min(int(image_hw[0]), int(image_hw[1]))
    depth = 1
    while depth < 3 and side // 2**depth >= 4:
        depth += 1
    return depth


def _layer_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """Sum over output units of 1 - cosine between ``a`` and ``b``'s incoming weights; output units are
    the last axis in this package's layouts (conv HWIO, dense (in, out))."""
    a = a.reshape(-1, a.shape[-1])
    b = b.reshape(-1, b.shape[-1])
    cos = jnp.sum(a * b, axis=0) / (_norm(a) * _norm(b) + 1e-6)
    return jnp.sum(1.0 - cos)


def _norm(a: jax.Array) -> jax.Array:
    """Column norms whose gradient is 0, not NaN, at a zero column (a unit whose gradient vanished),
    as PyTorch's ``norm``."""
    sq = jnp.sum(a * a, axis=0)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def match_distance(g_real: Any, g_syn: Any) -> jax.Array:
    """DC's gradient-matching distance between two gradient pytrees of the same network (1-d leaves,
    biases and normalisation parameters, are left out)."""
    pairs = zip(jax.tree_util.tree_leaves(g_real), jax.tree_util.tree_leaves(g_syn))
    terms = [_layer_distance(a, b) for a, b in pairs if a.ndim >= 2]
    return functools.reduce(jnp.add, terms, jnp.zeros((), jnp.float32))


def _xent(params, net, x, t, mask):
    """Mean cross-entropy over the rows with ``mask`` 1 (``t``: one-hot rows)."""
    return nets.loss_value(params, net, "xent", x, t, mask)


def _augmenter(families: tuple[str, ...] | None):
    return functools.partial(dsa_augment, families=families) if families else None


_GROUP = 10  # classes per compiled matching function (unrolled inside; more classes reuse it)


@functools.partial(jax.jit, static_argnames=("net", "families"))
def _group_match(params, real_x, real_mask, x_g, targets, keys, *, net, families):
    """For a group of g classes: each class's distance between the gradients of its real batch
    ``real_x[j]: (b, h, w, c)`` (``real_mask[j]`` 0 on padding) and of its synthetic images ``x_g[j]``,
    and the gradient of the distance with respect to those images; ``targets[j]`` is the class's one-hot
    row and ``keys[j]`` its augmentation key. Returns ``(values (g,), grads like x_g)``.

    The classes are unrolled rather than mapped: XLA's CPU backend then overlaps them on the cores, where
    a vmap turns the per-class weight gradients into grouped convolutions (5.3x slower here) and a call
    per class runs 1.3x slower (benchmarks/results/dc.md, `benchmarks/dc.py profile`)."""
    augment = _augmenter(families)
    g = x_g.shape[0]
    if augment is not None:  # the same transform for the class's real and synthetic batch
        real_x = jnp.stack([augment(keys[j], real_x[j]) for j in range(g)])
    g_real = [jax.grad(_xent)(params, net, real_x[j], jnp.broadcast_to(targets[j], (real_x.shape[1],
                                                                                   targets.shape[1])), real_mask[j])
              for j in range(g)]

    def total(xs):
        values = []
        for j in range(g):
            xc = xs[j] if augment is None else augment(keys[j], xs[j])
            t_syn = jnp.broadcast_to(targets[j], (xc.shape[0], targets.shape[1]))
            g_syn = jax.grad(_xent)(params, net, xc, t_syn, jnp.ones((xc.shape[0],), jnp.float32))
            values.append(match_distance(g_real[j], g_syn))
        values = jnp.stack(values)
        return jnp.sum(values), values

    (_, values), grads = jax.value_and_grad(total, has_aux=True)(x_g)
    return values, grads


def _match_step(x_syn, momentum_buf, params, real_x, real_mask, key, lr, momentum, *, net, families):
    """One round's update of the synthetic images ``x_syn: (k, ipc, h, w, c)`` against real batches
    ``real_x: (k, b, h, w, c)`` (``real_mask: (k, b)``): SGD with momentum on the sum of the per-class
    distances (each class's distance depends on its own images only, so the gradient is computed in groups
    of ``_GROUP`` classes: one compiled function for any number of classes). Returns the images, the
    momentum and the mean distance per class."""
    k = x_syn.shape[0]
    eye = jnp.eye(k, dtype=jnp.float32)
    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(k))
    values, grads = [], []
    for s in range(0, k, _GROUP):
        g = slice(s, min(s + _GROUP, k))
        v, gr = _group_match(params, real_x[g], real_mask[g], x_syn[g], eye[g], keys[g], net=net, families=families)
        values.append(v)
        grads.append(gr)
    x_syn, momentum_buf = nets.momentum_step(x_syn, momentum_buf, jnp.concatenate(grads), lr, momentum)
    return x_syn, momentum_buf, jnp.sum(jnp.concatenate(values)) / k


def _fresh(key, input_shape, num_classes, *, net, lr_net, momentum):
    """A fresh network and its SGD state (PyTorch's SGD, no weight decay, as DC's ``optimizer_net``)."""
    params = nets.init_params(key, input_shape, num_classes, net=net)
    return params, nets.init_optimizer("sgd", params, learning_rate=lr_net, momentum=momentum)


def _rounds(labels: np.ndarray, num_classes: int, rounds: int, per_class: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """Which of a step's real images each round matches, as DC's ``get_images`` draws them: for every round
    and class, ``b = min(per_class, largest class count)`` images of that class at random without
    replacement (a fresh draw per round, from ``numpy.random.default_rng(seed)``). Returns positions in
    the batch ``(rounds, k, b)`` and a mask ``(rounds, k, b)``, 0 where a class has fewer than ``b`` images
    (padding, pointing at position 0)."""
    groups = [np.flatnonzero(labels == c) for c in range(num_classes)]
    missing = [c for c, g in enumerate(groups) if g.size == 0]
    if missing:
        raise InvalidInputError(f"dc: the real batch has no image of class(es) {missing}; every class needs "
                                "training images")
    b = min(per_class, max(g.size for g in groups))
    rng = np.random.default_rng(seed)
    pos = np.zeros((rounds, num_classes, b), np.int64)
    mask = np.zeros((rounds, num_classes, b), np.float32)
    for r in range(rounds):
        for c, g in enumerate(groups):
            n = min(b, g.size)
            pos[r, c, :n] = rng.choice(g, size=n, replace=False)
            mask[r, c, :n] = 1.0
    return pos, mask


@dataclasses.dataclass(frozen=True)
class DCSettings(DriverSettings):
    """DC's settings: the driver's (``steps`` are DC's iterations; ``target_batch`` is ``batch_real``
    times the classes) and its own (module docstring).

    Attributes:
      lr: learning rate of the images (DC: 0.1). momentum: their SGD momentum (0.5).
      lr_net: the network's learning rate in the inner loop (0.01), momentum 0.5.
      batch_real: real images per class and round (256). batch_train: the inner loop's batch (256).
      outer_loop, inner_loop: None for DC's values at this ipc (:func:`dc_loops`).
      dsa: differentiable Siamese augmentation while matching and training.
      dc_width, dc_depth: the ConvNet's width and depth (DC: 128, 3; None: :func:`dc_depth_for` the images).
      val_epochs: epochs of the ConvNet trained on the set at each validation (DC's protocol's 300).
    """

    steps: int = 1000
    # target_batch follows the rounds and batch_real (resolve); DC draws its real batches itself (no samplers)
    target_batch: int = hidden(5000)
    val_every: int = 100
    checkpoint_every: int = 10
    init: str = "real"
    sampler: str = hidden("uniform")
    pick_every: int = hidden(50)
    pick_pool: int = hidden(10_000)
    pick_floor: float = hidden(0.1)
    pick_unbiased: bool = hidden(False)
    pick_global: bool = hidden(False)
    lr: float = option(0.1, "learning rate of the images (DC: 0.1)", min=0, min_exclusive=True, max=100)
    momentum: float = option(0.5, "SGD momentum of the images (DC: 0.5)", min=0, max=0.999)
    lr_net: float = option(0.01, "learning rate of the network between rounds (DC: 0.01)", min=0, min_exclusive=True,
                           max=100)
    batch_real: int = option(256, "real images per class and round (DC: 256)", min=1, max=10**6)
    batch_train: int = option(256, "batch of the network's training between rounds (DC: 256)", min=1, max=10**6)
    outer_loop: int | None = option(None, "rounds per iteration (default: DC's for the ipc)", min=1, max=10**4)
    inner_loop: int | None = option(None, "epochs of network training between rounds (default: DC's for the ipc)",
                                    min=0, max=10**5)
    dsa: bool = option(False, "differentiable Siamese augmentation (Zhao & Bilen 2021) while matching, training the "
                       "network between rounds, and validating")
    dc_width: int = option(128, "width of DC's ConvNet", min=1, max=4096)
    dc_depth: int | None = option(None, "depth of DC's ConvNet (default: DC's 3, or less for images under 16x16: "
                                  "see dc_depth_for)", min=1, max=8)
    val_epochs: int = option(300, "epochs of the ConvNet trained on the set at each validation", min=1, max=10**5)

    def resolve(self, ctx: Context) -> "DCSettings":
        """DC's loops for the run's ipc where not given, and the driver's batch: ``outer_loop * batch_real``
        real images per class."""
        outer, inner = dc_loops(ctx.config.ipc)
        outer = outer if self.outer_loop is None else self.outer_loop
        inner = inner if self.inner_loop is None else self.inner_loop
        depth = dc_depth_for(ctx.x_train.shape[1:3]) if self.dc_depth is None else self.dc_depth
        return dataclasses.replace(self, outer_loop=outer, inner_loop=inner, dc_depth=depth,
                                   target_batch=outer * self.batch_real * ctx.num_classes)

    def info(self, ctx: Context) -> dict:
        """DC's fields of ``summary.json``'s ``method_info``."""
        return {"outer_loop": self.outer_loop, "inner_loop": self.inner_loop,
                "dsa_families": list(dsa_strategy(ctx.dataset_name) if self.dsa else ()),
                "validation_augment": resolve_augment("dsa" if self.dsa else "auto", ctx.dataset_name)[0],
                "test_accuracy_is": f"KRR with {ctx.kernel.spec} (DC's own measure: kdistill evaluate FILE --model "
                                    "convnet)"}


def dc_method(*, num_classes: int, ipc: int, input_shape: tuple[int, ...], lr: float = 0.1, momentum: float = 0.5,
              lr_net: float = 0.01, batch_train: int = 256, outer_loop: int | None = None,
              inner_loop: int | None = None, dsa: tuple[str, ...] | None = None, width: int = 128, depth: int = 3,
              val_epochs: int = 300, batch_real: int = 256, val_augment: tuple[str, bool] = ("none", True),
              seed: int = 0) -> IterativeMethod:
    """DC as an iterative method: each driver step is one DC iteration (a fresh network, ``outer_loop``
    rounds). ``dsa``: the augmentation families (``kdistill.nets.dsa_strategy``) or None.
    ``val_augment``: ``(augment, flip)`` of the ConvNet trained at each validation (the evaluation
    protocol the set will be judged by: ``evaluate.resolve_augment``).

    The driver's batch for a step (class-balanced, ``outer_loop * batch_real`` per class, capped at the
    class's size) is the pool each round draws its ``batch_real`` images per class from (:func:`_rounds`).

    State: ``{"x": images (k, ipc, h, w, c), "buf": their momentum}``, grouped by class; ``support`` returns
    them in the order of the initial set.
    """
    default_outer, default_inner = dc_loops(ipc)
    outer = default_outer if outer_loop is None else outer_loop
    inner = default_inner if inner_loop is None else inner_loop
    net = ConvNet(width=width, depth=depth, norm="instance", parameterization="standard")
    net.check_input(input_shape)  # a clear error for images too small for the depth
    families = tuple(dsa) if dsa else None
    train_augment, flip = ("dsa", "flip" in families) if families else ("none", True)
    base = jax.random.fold_in(jax.random.key(seed, impl="rbg"), 0x6463)  # "dc": the stream of networks
    hyper = {k: jnp.asarray(v, jnp.float32) for k, v in (("lr", lr), ("momentum", momentum))}
    m = num_classes * ipc
    t_syn = jnp.asarray(np.repeat(np.eye(num_classes, dtype=np.float32), ipc, axis=0))

    order: dict[str, np.ndarray] = {}

    def init(x_s, y_s):
        y_s = np.asarray(y_s)
        cls = np.argmax(y_s, axis=1)
        counts = np.bincount(cls, minlength=num_classes)
        if not np.array_equal(counts, np.full(num_classes, ipc)):
            raise InvalidInputError(f"dc needs {ipc} initial images of each of {num_classes} classes, got "
                                    f"{counts.tolist()} per class")
        perm = np.argsort(cls, kind="stable")
        order.update(perm=perm, inverse=np.argsort(perm), labels=y_s)
        x = np.asarray(x_s, np.float32)[perm].reshape((num_classes, ipc) + tuple(input_shape))
        return {"x": jnp.asarray(x), "buf": jnp.zeros(x.shape, jnp.float32)}

    def step(state, batch: Batch):
        key = jax.random.fold_in(base, batch.step)
        params, opt_state = _fresh(jax.random.fold_in(key, 0), tuple(input_shape), num_classes, net=net,
                                   lr_net=lr_net, momentum=0.5)
        x, buf = state["x"], state["buf"]
        labels = np.argmax(np.asarray(batch.y), axis=1)
        pos, mask = _rounds(labels, num_classes, outer, batch_real, [seed, 0x6463, batch.step])
        x_real = jnp.asarray(batch.x, jnp.float32)
        k_match, k_train = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
        values = []
        for r in range(outer):
            x, buf, value = _match_step(x, buf, params, x_real[pos[r]], jnp.asarray(mask[r]),
                                        jax.random.fold_in(k_match, r), hyper["lr"], hyper["momentum"], net=net,
                                        families=families)
            values.append(value)
            if r == outer - 1:
                break
            flat = x.reshape((m,) + tuple(input_shape))
            params, opt_state, _ = nets.run_epochs(
                params, opt_state, flat, t_syn, key=jax.random.fold_in(k_train, r), epochs=inner, batch=batch_train,
                net=net, loss="xent", augment=train_augment, flip=flip)
        return {"x": x, "buf": buf}, {"loss": float(np.mean(jax.device_get(values)))}

    def support(state):
        x = np.asarray(state["x"]).reshape((m,) + tuple(input_shape))
        return x[order["inverse"]], order["labels"]

    def validate(x_s, y_s, x_val, labels_val):
        settings = finite_settings("convnet", width=width, depth=depth, epochs=val_epochs,
                                   augment=val_augment[0], flip=val_augment[1])
        trained = train(np.asarray(x_s, np.float32), np.asarray(y_s, np.float32), settings, seed=seed)
        return accuracy(settings.net, trained.params, x_val, labels_val)

    return IterativeMethod("dc", init, step, support, validate, hint="lower --lr")


def _build(s: DCSettings, ctx: Context) -> IterativeMethod:
    return dc_method(num_classes=ctx.num_classes, ipc=ctx.config.ipc, input_shape=tuple(ctx.x_train.shape[1:]),
                     lr=s.lr, momentum=s.momentum, lr_net=s.lr_net, batch_train=s.batch_train,
                     outer_loop=s.outer_loop, inner_loop=s.inner_loop,
                     dsa=dsa_strategy(ctx.dataset_name) if s.dsa else None, width=s.dc_width, depth=s.dc_depth,
                     val_epochs=s.val_epochs, batch_real=s.batch_real,
                     val_augment=resolve_augment("dsa" if s.dsa else "auto", ctx.dataset_name), seed=ctx.config.seed)


register_iterative("dc", DCSettings, _build, doc="DC (Zhao et al. 2021): gradient matching on fresh ConvNets, class by "
                   "class (--dsa: with differentiable Siamese augmentation); evaluate the set with `kdistill evaluate "
                   "--model convnet`", precision="float32", kernel="linear",
                   smoke={"steps": 4, "val_every": 2, "checkpoint_every": 1, "dc_width": 8, "dc_depth": 1,
                          "batch_real": 4, "lr": 0.001, "outer_loop": 2, "inner_loop": 1, "val_epochs": 2},
                   smoke_kernel="rbf")
