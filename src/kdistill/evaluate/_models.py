"""Finite networks for transfer evaluation: plain JAX, parameters as pytrees.

Each model is a frozen (hashable) dataclass with two pure functions,

    params = model.init(key, input_shape, num_classes)   # input_shape = (h, w, c)
    logits = model.apply(params, x)                       # x: (n, h, w, c) -> (n, k)

so it can be passed as a static argument to ``jax.jit``. Everything is float32.

The named models (:data:`MODELS`, built by :func:`make_model`):

- ``convnet``: the ConvNet of Dataset Condensation (DC/DSA; Zhao et al.,
  arXiv:2006.05929): ``depth`` blocks of [Conv3x3 (SAME) -> instance norm
  (affine) -> ReLU -> AvgPool 2x2], then a linear head; width 128, depth 3.
  Initialised as PyTorch does: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- ``convnet-kip``: the finite counterpart of this package's ``convnet-ntk``
  kernel (KIP, arXiv:2107.13034): Conv3x3 -> ReLU, then ``depth`` blocks of
  [Conv3x3 -> ReLU -> AvgPool 2x2], Flatten, Dense; no normalisation; NTK
  parameterisation ``y = w_std / sqrt(fan_in) * (W x) + b_std * b`` with
  ``W, b ~ N(0, 1)``, ``w_std = sqrt(2)``, ``b_std = 0.1``; width 1024, depth 3.
- ``fc``: a ReLU MLP, ``depth`` hidden layers of width 256, PyTorch-style init.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ..errors import InvalidInputError
from ..nets import conv3x3

__all__ = ["MODELS", "ConvNet", "MLP", "make_model"]

Params = Any  # a pytree of float32 arrays

_F32 = jnp.float32
_EPS = 1e-5  # instance norm epsilon (PyTorch GroupNorm default)


def _uniform(key, shape, fan_in: int) -> jax.Array:
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, _F32, -bound, bound)


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return conv3x3(x, w)  # XLA's forward, the fastest measured backward per layer shape (kdistill.nets)


def _avg_pool(x: jax.Array) -> jax.Array:
    """2x2 average pooling, stride 2, VALID (odd sizes are floored, as PyTorch's AvgPool2d(2))."""
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _instance_norm(x: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """Per image and channel: ``(x - mean_hw) / sqrt(var_hw + eps) * scale + shift``."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
    return (x - mean) * lax.rsqrt(var + _EPS) * scale + shift


@dataclasses.dataclass(frozen=True)
class ConvNet:
    """A ConvNet of ``depth`` [Conv3x3 -> (norm) -> ReLU -> AvgPool2x2] blocks and a linear head.

    Attributes:
      width: channels of every conv layer.
      depth: number of pooling blocks; images need ``min(h, w) >= 2**depth``.
      norm: ``"instance"`` (DC) or ``"none"`` (KIP).
      parameterization: ``"standard"`` (PyTorch-style uniform init) or ``"ntk"``.
      stem: an extra Conv3x3 -> ReLU before the blocks (KIP's ConvNet).
      w_std, b_std: NTK parameterisation scales (ignored for ``"standard"``).
    """

    width: int = 128
    depth: int = 3
    norm: str = "instance"
    parameterization: str = "standard"
    stem: bool = False
    w_std: float = math.sqrt(2.0)
    b_std: float = 0.1

    def _check(self, input_shape) -> tuple[int, int, int]:
        if len(input_shape) != 3:
            raise InvalidInputError(f"ConvNet input_shape must be (h, w, c), got {tuple(input_shape)}")
        h, w, c = (int(v) for v in input_shape)
        if min(h, w) < 2**self.depth:
            raise InvalidInputError(
                f"{h}x{w} images are too small for a depth-{self.depth} ConvNet (2x2 pooling {self.depth} times)"
            )
        return h, w, c

    def _layer(self, key, fan_in: int, w_shape, b_shape) -> dict:
        kw, kb = jax.random.split(key)
        if self.parameterization == "ntk":
            return {"w": jax.random.normal(kw, w_shape, _F32), "b": jax.random.normal(kb, b_shape, _F32)}
        return {"w": _uniform(kw, w_shape, fan_in), "b": _uniform(kb, b_shape, fan_in)}

    def _affine(self, layer: dict, y: jax.Array, fan_in: int) -> jax.Array:
        if self.parameterization == "ntk":
            return y * jnp.asarray(self.w_std / math.sqrt(fan_in), _F32) + jnp.asarray(self.b_std, _F32) * layer["b"]
        return y + layer["b"]

    def init(self, key, input_shape, num_classes: int) -> Params:
        """Parameters ``{"stem": ..., "blocks": [...], "head": {"w": (d, k), "b": (k,)}}``."""
        h, w, c = self._check(input_shape)
        keys = jax.random.split(key, self.depth + 2)
        params: dict[str, Any] = {}
        cin = c
        if self.stem:
            params["stem"] = self._layer(keys[-1], 9 * cin, (3, 3, cin, self.width), (self.width,))
            cin = self.width
        blocks = []
        for i in range(self.depth):
            layer = self._layer(keys[i], 9 * cin, (3, 3, cin, self.width), (self.width,))
            if self.norm == "instance":
                layer["scale"] = jnp.ones((self.width,), _F32)
                layer["shift"] = jnp.zeros((self.width,), _F32)
            blocks.append(layer)
            cin = self.width
            h, w = h // 2, w // 2
        params["blocks"] = blocks
        feat = h * w * self.width
        params["head"] = self._layer(keys[self.depth], feat, (feat, int(num_classes)), (int(num_classes),))
        return params

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """x: (n, h, w, c) -> logits (n, k)."""
        x = jnp.asarray(x, _F32)
        if "stem" in params:
            x = jax.nn.relu(self._affine(params["stem"], _conv(x, params["stem"]["w"]), 9 * x.shape[-1]))
        for layer in params["blocks"]:
            fan_in = 9 * x.shape[-1]
            x = self._affine(layer, _conv(x, layer["w"]), fan_in)
            if "scale" in layer:
                x = _instance_norm(x, layer["scale"], layer["shift"])
            x = _avg_pool(jax.nn.relu(x))
        x = x.reshape(x.shape[0], -1)
        head = params["head"]
        return self._affine(head, x @ head["w"], x.shape[-1])


@dataclasses.dataclass(frozen=True)
class MLP:
    """Flatten -> ``depth`` x [Dense(width) -> ReLU] -> Dense(k), PyTorch-style uniform init."""

    width: int = 256
    depth: int = 2

    def init(self, key, input_shape, num_classes: int) -> Params:
        """Parameters: a list of ``{"w": (d_in, d_out), "b": (d_out,)}``, the last one the head."""
        d = int(math.prod(int(v) for v in input_shape))
        sizes = [d] + [self.width] * self.depth + [int(num_classes)]
        keys = jax.random.split(key, len(sizes) - 1)
        layers = []
        for k, (a, b) in zip(keys, zip(sizes[:-1], sizes[1:])):
            kw, kb = jax.random.split(k)
            layers.append({"w": _uniform(kw, (a, b), a), "b": _uniform(kb, (b,), a)})
        return layers

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """x: (n, h, w, c) -> logits (n, k)."""
        x = jnp.asarray(x, _F32).reshape(x.shape[0], -1)
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]


MODELS: dict[str, ConvNet | MLP] = {
    "convnet": ConvNet(width=128, depth=3, norm="instance", parameterization="standard"),
    "convnet-kip": ConvNet(width=1024, depth=3, norm="none", parameterization="ntk", stem=True),
    "fc": MLP(width=256, depth=2),
}
"""The named models with their default width and depth."""


def make_model(name: str, *, width: int | None = None, depth: int | None = None) -> ConvNet | MLP:
    """The model ``name`` (a key of :data:`MODELS`), with ``width``/``depth`` overriding its defaults."""
    if name not in MODELS:
        raise InvalidInputError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    for what, v in (("width", width), ("depth", depth)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise InvalidInputError(f"{what} must be an integer >= 1, got {v!r}")
    changes = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    return dataclasses.replace(MODELS[name], **changes)
