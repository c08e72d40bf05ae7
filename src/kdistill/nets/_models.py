"""The networks of :mod:`kdistill.nets`: plain JAX, parameters as pytrees.

Each model is a frozen (hashable) dataclass with two pure functions,

    params = model.init(key, input_shape, num_classes)   # input_shape = (h, w, c)
    logits = model.apply(params, x)                       # x: (n, h, w, c) -> (n, k)

so it can be passed as a static argument to ``jax.jit``. Everything is float32. Unless stated, layers are
initialised as PyTorch does (:mod:`._layers`), which the published networks below keep.

The named models (:data:`MODELS`, built by :func:`make_model`); "DC's" means the definitions in
``networks.py`` of Dataset Condensation's code (Zhao et al., arXiv:2006.05929), which DSA, DM and DC-BENCH
(Cui et al., arXiv:2207.09639) reuse for their cross-architecture tables:

- ``convnet``: DC's ConvNet: ``depth`` blocks of [Conv3x3 (SAME) -> norm -> ReLU -> pool 2x2], then a
  linear head; width 128, depth 3, instance norm (affine), average pooling. DC's variants are fields:
  ``norm`` in ``instance``, ``group`` (4 groups), ``layer``, ``none`` (batch norm needs running statistics,
  which this functional model does not keep) and ``pooling`` in ``avg``, ``max``, ``none``. One difference
  from DC's code: DC pads the first conv of a 1-channel 28x28 image by 3 (to 32x32, so its features are
  4x4 after 3 poolings), this one by 1 (3x3 after 3 poolings); kept so that earlier results reproduce.
- ``convnet-kip``: KIP's finite ConvNet (``ConvNet`` in ``kip/nn_training.ipynb`` of google-research, the
  finite counterpart of this package's ``convnet-ntk`` kernel; arXiv:2107.13034): Conv3x3 -> ReLU, then
  ``depth`` blocks of [Conv3x3 -> ReLU -> AvgPool 2x2], Flatten, Dense; no normalisation; width 1024, depth 3;
  the standard parameterisation KIP's notebook trains with (``parameterization="gaussian"``: weights
  ``N(0, 2 / fan_in)``, biases ``N(0, 0.1^2)``; ``"ntk"`` gives the same functions at initialisation,
  ``y = w_std / sqrt(fan_in) * (W x) + b_std * b`` with ``W, b ~ N(0, 1)``, but other training dynamics).
- ``convnet-frepo``: FRePo's and RCIG's evaluation ConvNet (``Conv`` in FRePo's ``lib/models/networks.py``):
  ``depth`` blocks of [Conv3x3 -> ReLU -> AvgPool 2x2] with 128, 256, 512 channels (``widen=2``), no
  normalisation, a linear head. Two differences from FRePo's Flax code: PyTorch-style initialisation (FRePo:
  LeCun normal weights, zero biases) and a first-layer padding of 1 on 1-channel images (FRePo pads by 3).
- ``convnet-rfad``: RFAD's evaluation ConvNet (``ConvNet`` in ``models.py`` of RFAD's code, ``yolky/RFAD``, with
  ``net_norm='none'``): ``depth`` blocks of [Conv3x3 (padding 1) -> ReLU -> AvgPool 2x2] of constant width
  1024, a linear head; standard parameterisation with He-normal initialisation (``parameterization="he"``).
- ``mlp``: DC's MLP: Flatten -> Dense(128) -> ReLU -> Dense(128) -> ReLU -> Dense(k).
- ``fc``: the same MLP shape with width 256 (this package's earlier default).
- ``alexnet``: DC's AlexNet (no dropout, no local response norm): Conv5x5(128, padding 4 for 1 channel, 2
  otherwise: 28x28 and 32x32 inputs both give 32x32) -> ReLU -> MaxPool, Conv5x5(192) -> ReLU -> MaxPool,
  Conv3x3(256) -> ReLU, Conv3x3(192) -> ReLU, Conv3x3(192) -> ReLU -> MaxPool, Dense(k) on the 4x4x192
  features. ``width`` is the first layer's channels (128); the others keep DC's ratios (1.5x, 2x, 1.5x,
  1.5x).
- ``vgg11``: DC's VGG-11 with instance norm: [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] where
  a number is Conv3x3 -> instance norm -> ReLU and M a 2x2 max pool; the first conv pads a 1-channel image
  by 3 (28x28 -> 32x32); then Dense(k) on the 1x1x512 features. ``width`` scales the channels (64 = DC's).
- ``resnet18``: DC's ResNet-18 with instance norm: Conv3x3(64, no bias) -> norm -> ReLU, four stages of two
  basic blocks (64, 128, 256, 512 channels; the first block of stages 2-4 has stride 2 and a 1x1 conv +
  norm shortcut), global average pooling (DC's ``avg_pool2d(out, 4)`` on the 4x4 maps that 28x28 and
  32x32 inputs give), Dense(k). ``width`` scales the channels (64 = DC's).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from ..errors import InvalidInputError
from ._layers import (F32, avg_pool, conv, conv_init, dense, dense_init, group_norm, instance_norm, layer_norm,
                      max_pool, norm_init, uniform)
from ._conv import FORMULATIONS

__all__ = ["MODELS", "AlexNet", "ConvNet", "MLP", "ResNet18", "VGG11", "make_model"]

Params = Any  # a pytree of float32 arrays

NORMS = ("instance", "group", "layer", "none")
POOLINGS = ("avg", "max", "none")
PARAMETERIZATIONS = ("standard", "ntk", "gaussian", "he")
ACTIVATIONS = ("relu", "softplus")


def _image_shape(input_shape, name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise InvalidInputError(f"{name} input_shape must be (h, w, c), got {tuple(input_shape)}")
    return tuple(int(v) for v in input_shape)  # type: ignore[return-value]


def _too_small(name: str, h: int, w: int, need: int) -> InvalidInputError:
    return InvalidInputError(f"{h}x{w} images are too small for {name} (it needs at least {need}x{need})")


@dataclasses.dataclass(frozen=True)
class ConvNet:
    """A ConvNet of ``depth`` [Conv3x3 -> (norm) -> ReLU -> (pool 2x2)] blocks and a linear head.

    Attributes:
      width: channels of every conv layer.
      depth: number of blocks; with pooling, images need ``min(h, w) >= 2**depth``.
      norm: one of :data:`NORMS`: ``"instance"`` (DC), ``"group"`` (4 groups), ``"layer"`` or ``"none"`` (KIP).
      pooling: one of :data:`POOLINGS`: ``"avg"`` (DC, KIP), ``"max"`` or ``"none"``.
      parameterization: ``"standard"`` (PyTorch-style uniform init), ``"ntk"``, ``"gaussian"`` (standard
        parameterisation with weights ``N(0, w_std^2 / fan_in)`` and biases ``N(0, b_std^2)``: neural-tangents'
        ``parameterization='standard'``, KIP's finite networks) or ``"he"`` (the same with ``w_std = sqrt(2)``,
        ``b_std = 0.1`` but PyTorch's uniform bias in the dense head: RFAD's ``Conv2d_gaussian`` and
        ``GaussianLinear``).
      stem: an extra Conv3x3 -> ReLU before the blocks (KIP's ConvNet).
      w_std, b_std: NTK parameterisation scales (ignored for ``"standard"``).
      widen: block ``i`` has ``width * widen**i`` channels (1: DC's and KIP's constant width; 2: FRePo's and
        RCIG's 128/256/512).
      activation: ``"relu"``, or ``"softplus"`` with sharpness ``softplus_beta`` (``log(1 + exp(b z)) / b``,
        RCIG's distillation networks at b = 60: ReLU with a second derivative).
      conv: the 3x3 convolutions' formulation (:func:`~kdistill.nets.conv3x3`; None: its default, the fastest,
        which has no forward mode; ``"xla"`` for ``jax.jvp`` through the network, as RCIG needs).
    """

    width: int = 128
    depth: int = 3
    norm: str = "instance"
    parameterization: str = "standard"
    stem: bool = False
    w_std: float = math.sqrt(2.0)
    b_std: float = 0.1
    pooling: str = "avg"
    widen: int = 1
    activation: str = "relu"
    softplus_beta: float = 60.0
    conv: str | None = None

    def __post_init__(self):
        if not isinstance(self.widen, int) or isinstance(self.widen, bool) or not 1 <= self.widen <= 4:
            raise InvalidInputError(f"widen must be an integer in 1 .. 4, got {self.widen!r}")
        if self.activation not in ACTIVATIONS:
            raise InvalidInputError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if not self.softplus_beta > 0:
            raise InvalidInputError(f"softplus_beta must be > 0, got {self.softplus_beta!r}")
        if self.conv is not None and self.conv not in FORMULATIONS:
            raise InvalidInputError(f"unknown conv formulation {self.conv!r}; valid: {', '.join(FORMULATIONS)}")
        if self.norm not in NORMS:
            hint = " (batch norm needs running statistics, which these functional models do not keep)" \
                if self.norm.startswith("batch") else ""
            raise InvalidInputError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}{hint}")
        if self.pooling not in POOLINGS:
            raise InvalidInputError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLINGS)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise InvalidInputError(f"unknown parameterization {self.parameterization!r}; valid: "
                                    f"{', '.join(PARAMETERIZATIONS)}")
        if self.norm == "group" and self.width % 4:
            raise InvalidInputError(f"group norm uses 4 groups: the width must be a multiple of 4, got {self.width}")

    def check_input(self, input_shape) -> tuple[int, int, int]:
        """``(h, w, c)`` of ``input_shape``, or a one-line error for images too small for the depth."""
        h, w, c = _image_shape(input_shape, "ConvNet")
        if self.pooling != "none" and min(h, w) < 2**self.depth:
            raise InvalidInputError(
                f"{h}x{w} images are too small for a depth-{self.depth} ConvNet (2x2 pooling {self.depth} times)"
            )
        return h, w, c

    def _layer(self, key, k: int, d_in: int, d_out: int) -> dict:
        """A conv (k = 3) or dense (k = 0) layer's ``{"w", "b"}``."""
        if self.parameterization == "ntk":
            kw, kb = jax.random.split(key)
            shape = (3, 3, d_in, d_out) if k else (d_in, d_out)
            return {"w": jax.random.normal(kw, shape, F32), "b": jax.random.normal(kb, (d_out,), F32)}
        if self.parameterization in ("he", "gaussian"):
            kw, kb = jax.random.split(key)
            fan_in = 9 * d_in if k else d_in
            shape = (3, 3, d_in, d_out) if k else (d_in, d_out)
            w_std, b_std = (math.sqrt(2.0), 0.1) if self.parameterization == "he" else (self.w_std, self.b_std)
            w = jax.random.normal(kw, shape, F32) * jnp.asarray(w_std / math.sqrt(fan_in), F32)
            if self.parameterization == "he" and not k:
                return {"w": w, "b": uniform(kb, (d_out,), fan_in)}
            return {"w": w, "b": jax.random.normal(kb, (d_out,), F32) * jnp.asarray(b_std, F32)}
        return conv_init(key, 3, d_in, d_out) if k else dense_init(key, d_in, d_out)

    def _affine(self, layer: dict, y: jax.Array, fan_in: int) -> jax.Array:
        if self.parameterization == "ntk":
            return y * jnp.asarray(self.w_std / math.sqrt(fan_in), F32) + jnp.asarray(self.b_std, F32) * layer["b"]
        return y + layer["b"]

    def _norm(self, x: jax.Array, layer: dict) -> jax.Array:
        if self.norm == "instance":
            return instance_norm(x, layer)
        if self.norm == "group":
            return group_norm(x, layer, 4)
        if self.norm == "layer":
            return layer_norm(x, layer)
        return x

    def _pool(self, x: jax.Array) -> jax.Array:
        return avg_pool(x) if self.pooling == "avg" else max_pool(x) if self.pooling == "max" else x

    def init(self, key, input_shape, num_classes: int) -> Params:
        """Parameters ``{"stem": ..., "blocks": [...], "head": {"w": (d, k), "b": (k,)}}``."""
        h, w, c = self.check_input(input_shape)
        keys = jax.random.split(key, self.depth + 2)
        params: dict[str, Any] = {}
        cin = c
        if self.stem:
            params["stem"] = self._layer(keys[-1], 3, cin, self.width)
            cin = self.width
        blocks = []
        for i in range(self.depth):
            cout = self.width * self.widen**i
            layer = self._layer(keys[i], 3, cin, cout)
            if self.norm == "layer":
                layer.update(scale=jnp.ones((h, w, cout), F32), shift=jnp.zeros((h, w, cout), F32))
            elif self.norm != "none":
                layer.update(norm_init(cout))
            blocks.append(layer)
            cin = cout
            if self.pooling != "none":
                h, w = h // 2, w // 2
        params["blocks"] = blocks
        feat = h * w * cin
        params["head"] = self._layer(keys[self.depth], 0, feat, int(num_classes))
        return params

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """x: (n, h, w, c) -> logits (n, k)."""
        x = self.features(params, x)
        head = params["head"]
        return self._affine(head, x @ head["w"], x.shape[-1])

    def features(self, params: Params, x: jax.Array) -> jax.Array:
        """x: (n, h, w, c) -> (n, d): the flattened output of the last block, what the linear head reads
        (FRePo's and RCIG's kernel features)."""
        x = jnp.asarray(x, F32)
        if "stem" in params:
            y = conv(x, {"w": params["stem"]["w"]}, formulation=self.conv)
            x = self._act(self._affine(params["stem"], y, 9 * x.shape[-1]))
        for layer in params["blocks"]:
            fan_in = 9 * x.shape[-1]
            x = self._affine(layer, conv(x, {"w": layer["w"]}, formulation=self.conv), fan_in)
            x = self._pool(self._act(self._norm(x, layer)))
        return x.reshape(x.shape[0], -1)

    def _act(self, x: jax.Array) -> jax.Array:
        if self.activation == "softplus":
            return jax.nn.softplus(self.softplus_beta * x) / self.softplus_beta
        return jax.nn.relu(x)


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
        return [dense_init(k, a, b) for k, (a, b) in zip(keys, zip(sizes[:-1], sizes[1:]))]

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """x: (n, h, w, c) -> logits (n, k)."""
        x = jnp.asarray(x, F32).reshape(x.shape[0], -1)
        for layer in params[:-1]:
            x = jax.nn.relu(dense(x, layer))
        return dense(x, params[-1])


@dataclasses.dataclass(frozen=True)
class AlexNet:
    """DC's AlexNet (module docstring); ``width`` is the first conv's channels, ``depth`` fixed at 5 convs."""

    width: int = 128
    depth: int = 5

    def _channels(self) -> list[int]:
        return [self.width, self.width * 3 // 2, self.width * 2, self.width * 3 // 2, self.width * 3 // 2]

    def _first_pad(self, c: int) -> int:
        return 4 if c == 1 else 2

    def init(self, key, input_shape, num_classes: int) -> Params:
        h, w, c = _image_shape(input_shape, "AlexNet")
        p = self._first_pad(c)
        if min(h, w) + 2 * p - 4 < 8:
            raise _too_small("alexnet", h, w, 12 - 2 * p)
        ch = self._channels()
        keys = jax.random.split(key, 6)
        convs = [conv_init(keys[0], 5, c, ch[0]), conv_init(keys[1], 5, ch[0], ch[1])]
        convs += [conv_init(keys[i + 2], 3, ch[i], ch[i + 1]) for i in range(1, 4)]
        hh, ww = (h + 2 * p - 4) // 2 // 2 // 2, (w + 2 * p - 4) // 2 // 2 // 2
        return {"convs": convs, "head": dense_init(keys[5], hh * ww * ch[4], int(num_classes))}

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, F32)
        c1, c2, c3, c4, c5 = params["convs"]
        x = max_pool(jax.nn.relu(conv(x, c1, padding=self._first_pad(x.shape[-1]))))
        x = max_pool(jax.nn.relu(conv(x, c2, padding=2)))
        x = jax.nn.relu(conv(x, c3))
        x = jax.nn.relu(conv(x, c4))
        x = max_pool(jax.nn.relu(conv(x, c5)))
        return dense(x.reshape(x.shape[0], -1), params["head"])


_VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # channels in units of width (DC's 64)


@dataclasses.dataclass(frozen=True)
class VGG11:
    """DC's VGG-11 with instance norm (module docstring); ``width`` the first conv's channels (64)."""

    width: int = 64
    depth: int = 11

    def init(self, key, input_shape, num_classes: int) -> Params:
        h, w, c = _image_shape(input_shape, "VGG11")
        if min(h, w) < (28 if c == 1 else 32):
            raise _too_small("vgg11", h, w, 28 if c == 1 else 32)
        if c == 1:  # the first conv pads by 3, not 1
            h, w = h + 4, w + 4
        convs = [v for v in _VGG11 if v != "M"]
        keys = jax.random.split(key, len(convs) + 1)
        layers, cin = [], c
        for k, v in zip(keys, convs):
            layers.append({**conv_init(k, 3, cin, v * self.width), **norm_init(v * self.width)})
            cin = v * self.width
        feat = (h // 32) * (w // 32) * cin
        return {"convs": layers, "head": dense_init(keys[-1], feat, int(num_classes))}

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, F32)
        layers = iter(params["convs"])
        for i, v in enumerate(_VGG11):
            if v == "M":
                x = max_pool(x)
                continue
            layer = next(layers)
            pad = 3 if i == 0 and x.shape[-1] == 1 else 1
            x = jax.nn.relu(instance_norm(conv(x, layer, padding=pad), layer))
        return dense(x.reshape(x.shape[0], -1), params["head"])


@dataclasses.dataclass(frozen=True)
class ResNet18:
    """DC's ResNet-18 with instance norm (module docstring); ``width`` the first stage's channels (64)."""

    width: int = 64
    depth: int = 18

    def init(self, key, input_shape, num_classes: int) -> Params:
        h, w, c = _image_shape(input_shape, "ResNet18")
        if min(h, w) < 9:  # below, the last stage is 1x1 and its instance norm outputs a constant
            raise InvalidInputError(f"{h}x{w} images are too small for resnet18: it needs at least 9x9 (its last "
                                    "stage would be 1x1, where instance norm leaves nothing to learn from)")
        keys = iter(jax.random.split(key, 22))
        params: dict[str, Any] = {"stem": {**conv_init(next(keys), 3, c, self.width, bias=False),
                                           **norm_init(self.width)}}
        blocks, cin = [], self.width
        for stage in range(4):
            planes = self.width * 2**stage
            for b in range(2):
                block = {"conv1": {**conv_init(next(keys), 3, cin, planes, bias=False), **norm_init(planes)},
                         "conv2": {**conv_init(next(keys), 3, planes, planes, bias=False), **norm_init(planes)}}
                if stage > 0 and b == 0:
                    block["shortcut"] = {**conv_init(next(keys), 1, cin, planes, bias=False), **norm_init(planes)}
                blocks.append(block)
                cin = planes
        params["blocks"] = blocks
        params["head"] = dense_init(next(keys), cin, int(num_classes))
        return params

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, F32)
        x = jax.nn.relu(instance_norm(conv(x, params["stem"]), params["stem"]))
        for block in params["blocks"]:
            stride = 2 if "shortcut" in block else 1
            y = jax.nn.relu(instance_norm(conv(x, block["conv1"], stride=stride, padding=1), block["conv1"]))
            y = instance_norm(conv(y, block["conv2"]), block["conv2"])
            if "shortcut" in block:
                x = instance_norm(conv(x, block["shortcut"], stride=2, padding=0), block["shortcut"])
            x = jax.nn.relu(y + x)
        return dense(x.mean(axis=(1, 2)), params["head"])


Model = ConvNet | MLP | AlexNet | VGG11 | ResNet18

MODELS: dict[str, Model] = {
    "convnet": ConvNet(width=128, depth=3, norm="instance", parameterization="standard"),
    "convnet-kip": ConvNet(width=1024, depth=3, norm="none", parameterization="gaussian", stem=True),
    "convnet-frepo": ConvNet(width=128, depth=3, norm="none", widen=2),
    "convnet-rfad": ConvNet(width=1024, depth=3, norm="none", parameterization="he"),
    "mlp": MLP(width=128, depth=2),
    "fc": MLP(width=256, depth=2),
    "alexnet": AlexNet(),
    "vgg11": VGG11(),
    "resnet18": ResNet18(),
}
"""The named models with their default width and depth (module docstring)."""

_FIXED_DEPTH = ("alexnet", "vgg11", "resnet18")


def make_model(name: str, *, width: int | None = None, depth: int | None = None) -> Model:
    """The model ``name`` (a key of :data:`MODELS`), with ``width``/``depth`` overriding its defaults
    (``alexnet``, ``vgg11`` and ``resnet18`` have a fixed depth)."""
    if name not in MODELS:
        raise InvalidInputError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    for what, v in (("width", width), ("depth", depth)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise InvalidInputError(f"{what} must be an integer >= 1, got {v!r}")
    if depth is not None and name in _FIXED_DEPTH and depth != MODELS[name].depth:
        raise InvalidInputError(f"{name} has a fixed depth ({MODELS[name].depth}); drop depth, or use convnet "
                                "or mlp for a variable depth")
    changes = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    return dataclasses.replace(MODELS[name], **changes)
