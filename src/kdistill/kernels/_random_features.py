"""Random-feature kernels: the empirical NNGP of random finite networks (RFAD, arXiv:2210.12067).

``rf-convnet`` and ``rf-fc`` draw ``models`` networks of the ``convnet`` / ``fc``
architecture (width ``width``, NTK parameterization, weights N(0, w_std^2 / fan_in),
biases N(0, b_std^2), see :mod:`kdistill.nets.ntk`) from ``jax.random.key(seed)`` and use the
readout's input activations phi_m(x) (after the last pool, flattened; p per network):

    k(x1, x2) = w_std^2 / (models * p) * sum_m <phi_m(x1), phi_m(x2)> + b_std^2

which is the NNGP of the readout Dense given the random features; as
models * width -> infinity it tends to ``convnet-nngp`` / ``fc-nngp``. No
normalisation is applied. The feature map is explicit (``Kernel.features``):
``features(x) = [w_std / sqrt(models p) * phi_1(x), ..., phi_models(x), b_std]``,
``(n, models * p + 1)``, so ridge regression can run in the primal, cost linear in n.
``Kernel.draw_features(x, key=..., models=..., width=...)`` gives the same features with the networks
drawn from another key (RFAD redraws them every few steps), and ``Kernel.keyed`` the kernel of such a draw.

Networks are drawn in float32 whatever the input dtype (so float32 and float64
inputs see the same networks) and applied in the compute dtype (float64 when
``jax_enable_x64`` is on). Images go through in chunks of ``_CHUNK`` to bound memory.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ..errors import InvalidInputError, SpecError
from ._arccos import compute_dtype
from ._fc import B_STD, SQRT2, W_STD, check_relu_scale
from ..nets.ntk import apply_convnet, apply_fc, convnet_shapes, draw, fc_shapes
from ._spec import MAX_SEED, Kernel, Param, check_bytes, register

__all__ = ["random_features", "rf_convnet", "rf_fc"]

_CHUNK = 64  # images per step of the feature map (memory: chunk * h * w * width activations)
_CHUNK_BYTES = 2**30  # fewer images per step when a chunk's activations and features would pass this
_LIVE_ACTIVATIONS = 3  # copies of the first layer's output alive at once (conv output, ReLU, next input)
# Up to this many (network, chunk) pieces are written out as straight-line code; beyond it they run in
# lax.map loops. Differentiating through lax.map (a scan) was 2-3x slower than the straight-line form
# on this CPU (RFAD's per-step gradient, 100 MNIST images through 2 networks of width 64: 0.24 s against
# 0.69 s with the stem conv, 0.09 s against 0.18 s without; benchmarks/results/rfad_speed.md), while the
# forward pass is as fast either way.
_UNROLL_PIECES = 64
_RESIDUAL_BYTES = 2**30  # straight-line pieces keep activations for the backward pass below this, else recompute


def _shapes(arch: str, *, width: int, depth: int, image: tuple[int, int, int], stem: int = 1):
    h, w, c = image
    if arch == "convnet":
        return convnet_shapes(c, width=width, depth=depth, spatial=(h, w), stem=bool(stem))
    return fc_shapes(h * w * c, width=width, depth=depth)


def _weight_bytes(arch: str, *, models: int, width: int, depth: int, image: tuple[int, int, int],
                  stem: int = 1) -> int:
    """Bytes of the float32 random weights of ``models`` networks on ``image = (h, w, c)`` inputs."""
    shapes = _shapes(arch, width=width, depth=depth, image=image, stem=stem)
    return 4 * models * sum(math.prod(ws) + math.prod(bs) for ws, bs in shapes)


def _image_bytes(arch: str, *, models: int, width: int, depth: int, image: tuple[int, int, int],
                 itemsize: int, stem: int = 1) -> int:
    """Bytes alive per image of a chunk: the first layer's activations (a few copies) and the
    features of every network (twice: per network, then regrouped per image)."""
    h, w, c = image
    first = h * w * max(width, c) if arch == "convnet" else max(width, h * w * c)
    p = _shapes(arch, width=width, depth=depth, image=image, stem=stem)[-1][0][0]  # the readout's fan-in
    return (_LIVE_ACTIVATIONS * first + 2 * models * p) * itemsize


def _settings(models: int, width: int, depth: int) -> str:
    return f"models={models}, width={width}, depth={depth}"


def random_features(x, *, arch: str, models: int, width: int, depth: int, w_std: float, b_std: float, seed: int,
                    key=None, stem: int = 1) -> jax.Array:
    """Scaled random features ``x: (n, h, w, c) -> (n, models * p + 1)`` (module docstring).

    The networks come from ``jax.random.key(seed)``, or from ``key`` when given (a traced key:
    the draw is part of the computation, so a new key per call does not recompile). ``stem``
    (convnet only): 1 for a full-resolution Conv, ReLU before the pooled blocks, 0 for none."""
    dtype = jnp.dtype(compute_dtype(x))
    x = jnp.asarray(x, dtype)
    if x.ndim != 4:
        raise InvalidInputError(f"rf-{arch}: expected NHWC images (n, h, w, c), got shape {x.shape}")
    n, h, w, c = x.shape
    if arch == "convnet" and min(h, w) < 2**depth:
        raise InvalidInputError(f"rf-convnet: {h}x{w} images are too small for depth={depth}")
    shapes = _shapes(arch, width=width, depth=depth, image=(h, w, c), stem=stem)
    apply = functools.partial(apply_convnet, stem=bool(stem)) if arch == "convnet" else apply_fc
    per_image = _image_bytes(arch, models=models, width=width, depth=depth, image=(h, w, c), itemsize=dtype.itemsize,
                             stem=stem)
    weights = _weight_bytes(arch, models=models, width=width, depth=depth, image=(h, w, c), stem=stem)
    check_bytes(f"rf-{arch}", weights + per_image,
                f"random weights and one image's activations and features for {_settings(models, width, depth)} "
                f"on {h}x{w}x{c} images", "width, models or depth, or use smaller images")
    # The networks depend only on (seed, shapes): draw them eagerly, also while tracing,
    # so they enter a jitted computation as constants (no random generator to compile).
    if key is None:
        with jax.ensure_compile_time_eval():
            params = {"hidden": draw(jax.random.key(seed), shapes, batch=(models,))["hidden"]}
    else:
        params = {"hidden": draw(key, shapes, batch=(models,))["hidden"]}

    def chunk_features(xc):
        # (chunk, h, w, c) -> (chunk, models * p), one network at a time
        if params["hidden"]:
            per_model = lax.map(lambda p: apply(p, xc, w_std=w_std, b_std=b_std, readout=False), params)
        else:  # fc of depth 0: every network's features are the flattened input
            flat = apply(params, xc, w_std=w_std, b_std=b_std, readout=False)
            per_model = jnp.broadcast_to(flat, (models, *flat.shape))
        return jnp.moveaxis(per_model, 0, 1).reshape(xc.shape[0], models * per_model.shape[-1])

    size = max(1, min(n, _CHUNK, _CHUNK_BYTES // per_image))
    count = -(-n // size)
    if params["hidden"] and 1 <= models * count <= _UNROLL_PIECES:
        # straight-line pieces (fast to differentiate), recomputed in the backward pass when keeping every
        # piece's activations would pass _RESIDUAL_BYTES
        one = functools.partial(apply, w_std=w_std, b_std=b_std, readout=False)
        if 2 * n * models * per_image > _RESIDUAL_BYTES:
            one = jax.checkpoint(one)
        nets = [jax.tree_util.tree_map(lambda a, i=i: a[i], params) for i in range(models)]
        feats = jnp.concatenate([
            jnp.concatenate([one(p, x[j:j + size]) for p in nets], axis=1) for j in range(0, n, size)])
    elif count <= 1:
        feats = chunk_features(x)
    else:
        xp = jnp.pad(x, ((0, size * count - n), (0, 0), (0, 0), (0, 0)))
        feats = lax.map(jax.checkpoint(chunk_features), xp.reshape(count, size, h, w, c))
        feats = feats.reshape(count * size, feats.shape[-1])[:n]
    per_model = feats.shape[1] // models
    feats = feats * (w_std / math.sqrt(models * per_model))
    return jnp.concatenate([feats, jnp.full((n, 1), b_std, dtype)], axis=1)


def _build(arch: str, models: int, width: int, depth: int, w_std: float, b_std: float, seed: int,
           stem: int | None = None) -> Kernel:
    family = f"rf-{arch}"
    if stem == 0 and depth == 0:
        raise SpecError(f"{family}: stem=0 with depth=0 has no convolution at all; give depth >= 1 or stem=1")
    layers = depth + 1 + (stem if arch == "convnet" else 0)  # behind the readout
    check_relu_scale(family, layers=layers, depth=depth, w_std=w_std, b_std=b_std)
    # the weights that do not depend on the images (smallest images the depth allows, one channel);
    # random_features checks again with the images' real size
    smallest = (2**depth, 2**depth, 1) if arch == "convnet" else (1, 1, 1)
    extra = {} if stem is None else {"stem": stem}
    check_bytes(family, _weight_bytes(arch, models=models, width=width, depth=depth, image=smallest, **extra),
                f"random weights of {_settings(models, width, depth)}", "width, models or depth")
    settings = dict(arch=arch, models=models, width=width, depth=depth, w_std=w_std, b_std=b_std, seed=seed, **extra)
    features = jax.jit(functools.partial(random_features, **settings))

    def fn(x1, x2):
        return features(x1) @ features(x2).T

    def draw_features(x, *, key, models=None, width=None):
        given = {k: v for k, v in (("models", models), ("width", width)) if v is not None}
        return random_features(x, **{**settings, **given}, key=key)

    def keyed(key, x1, x2):
        return draw_features(x1, key=key) @ draw_features(x2, key=key).T

    params = (("models", models), ("width", width), ("depth", depth), ("w_std", w_std), ("b_std", b_std), ("seed", seed),
              *extra.items())
    return Kernel(family, params, fn, features=features, keyed=keyed, draw_features=draw_features)


def _params(width_doc: str, max_width: int, max_depth: int) -> dict[str, Param]:
    # Generous for RFAD-like settings (arXiv:2210.12067: ConvNets about 1024 wide, a handful of models);
    # max_width: one hidden layer of one network stays within MAX_BYTES (a 3x3 conv of width 4096:
    # 0.6 GB, a dense layer of width 16384: 1 GiB). Together with the images'
    # size, models * width * depth are also held to MAX_BYTES of weights and activations
    # (_spec.check_bytes), so a setting within these ranges can still be refused.
    return {
        "models": Param(int, 8, "number of random networks averaged", min=1, max=1024),
        "width": Param(int, 128, width_doc, min=1, max=max_width),
        "depth": Param(int, 3, "depth of the architecture, as in the exact kernel of the same name",
                       min=0, max=max_depth),
        "w_std": W_STD,
        "b_std": B_STD,
        "seed": Param(int, 0, "networks are drawn from jax.random.key(seed)", min=0, max=MAX_SEED),
    }


@register(
    "rf-convnet",
    params={**_params("channels of every conv layer", 4096, 10),
            "stem": Param(int, 1, "1: a full-resolution Conv3x3, ReLU before the depth [Conv3x3, ReLU, AvgPool2x2] "
                          "blocks (KIP's ConvNet, as convnet-nngp); 0: the blocks alone (DC's and RFAD's ConvNet, "
                          "about 4x fewer FLOPs on 28x28 images)", min=0, max=1)},
    doc="empirical NNGP of random finite ConvNets (RFAD random features; approaches convnet-nngp)",
)
def rf_convnet(*, models: int = 8, width: int = 128, depth: int = 3, w_std: float = SQRT2, b_std: float = 0.1, seed: int = 0,
               stem: int = 1) -> Kernel:
    return _build("convnet", models, width, depth, w_std, b_std, seed, stem)


@register(
    "rf-fc",
    params=_params("units of every hidden layer", 16384, 100),
    doc="empirical NNGP of random finite FC ReLU networks (approaches fc-nngp)",
)
def rf_fc(*, models: int = 8, width: int = 128, depth: int = 3, w_std: float = SQRT2, b_std: float = 0.1, seed: int = 0) -> Kernel:
    return _build("fc", models, width, depth, w_std, b_std, seed)
