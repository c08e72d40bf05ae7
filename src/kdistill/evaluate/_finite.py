"""Finite-network transfer: train a network on a distilled set, report its test accuracy.

Protocols (defaults per model in :data:`PROTOCOLS`, every one overridable):

- ``convnet`` (DC/DSA, arXiv:2006.05929, arXiv:2102.08259): cross-entropy, SGD
  with momentum 0.9, lr 0.01, weight decay 5e-4, batch 256, lr x0.1 at half the
  epochs ("step"), 300 epochs: DC's ``epoch_eval_train`` (DSA/DM use 1000; DC's code
  also raises it to 1000 when it augments). Augmentation follows DC's ``get_daparam`` by
  default (``augment="auto"``): DC's crop / scale / rotate on MNIST, none elsewhere.
- ``convnet-kip`` (KIP, arXiv:2107.13034; ``run_trainer`` and ``get_config`` of ``kip/nn_training.ipynb`` in
  google-research at 30adf0e, the authors' transfer notebook): KIP's ConvNet (width 1024, a stem conv and 3
  blocks, no normalisation, standard parameterisation), MSE on the stored labels, SGD with momentum 0.9, a
  cosine decay to 0 over 5000 steps, batches of 100, l2 regularisation 1e-3, no augmentation, the test score
  of the last step. The learning rate is KIP's estimate of the largest stable one (``lr_ntk`` 1.0 times
  :func:`kdistill.nets.max_learning_rate`: the top eigenvalue of the network's empirical NTK at initialisation
  on 50 held-out training images). KIP's loss is ``0.5 * mean`` over images and classes; it is written here as
  ``"mse-mean"`` (the mean, twice KIP's), whose estimated lr is half KIP's, with ``weight_decay`` 2e-3 (twice
  KIP's 1e-3): the same steps. KIP's notebook says its lr factor and l2 were found by a grid search it does
  not give. A given ``lr`` replaces the estimate. Width 1024 costs about 250x the DC ConvNet per image
  (9.7 vs 0.037 GMAC: the first block's 1024x1024 conv runs at full resolution), some 3 s per step on 10
  MNIST images on a 2-core CPU; ``width=128`` is the affordable stand-in there.
- ``mlp``, ``alexnet``, ``vgg11``, ``resnet18``: DC's protocol, the same as ``convnet``'s (DC and DC-BENCH
  train every architecture of their cross-architecture tables with it), DC's augmentation on MNIST included.
- ``fc``: cross-entropy, as ``convnet`` but with a cosine schedule.
- ``convnet-frepo`` (FRePo, arXiv:2206.00719, ``script/eval.py`` of its code; RCIG's ``eval.py`` is close,
  see below): FRePo's ConvNet (128/256/512 channels, no normalisation), MSE on the stored labels
  ``0.5 * mean_i ||f(x_i) - y_i||^2``, Adam (b1 0.9) at lr 3e-4 without weight decay, a linear warm-up from 0
  over 500 steps then a cosine to 1% of the lr, batch ``min(m, 500)``, and FRePo's number of steps by set
  size (``epochs=None``: :func:`frepo_steps`: 1000 for 10 images, 2000 up to 100, 5000 up to 500, 10000 up
  to 1000, 40000 beyond). Augmentation ``augment="auto"``: FRePo's own (``"frepo"``: one of colour, crop,
  rotate, translate and cutout per batch, parameters per image; flips on neither digits nor Fashion-MNIST).
  A 60-minute FRePo set on MNIST at ipc 1 scores 83.9% with it, 90.2% without and 78.9% with DSA's
  stronger families (``"dsa"``, this protocol's stand-in before ``"frepo"`` existed;
  ``benchmarks/results/frepo.md``). RCIG's ``eval.py`` (``yolky/RCIG``) builds the same network, loss and
  schedule at lr 1e-4, but with its own step count ``n`` (1000 for 10 images, 2000 for any other size) its
  training loop runs ``n // 200`` rounds of 500 steps: 2500 Adam steps for 10 images, 5000 otherwise, the
  cosine reaching 1% at step ``n`` and staying there; it reports the accuracy without and with augmentation
  (its MNIST and Fashion-MNIST config: crop, rotate, translate, cutout). ``--lr 1e-4`` with FRePo's steps and
  augmentation is the stand-in here (``benchmarks/results/rcig.md``'s "RCIG's protocol").
- ``convnet-rfad`` (RFAD, arXiv:2210.12067, ``eval_distilled_set.py --run_finite --use_best_hypers`` and
  ``training.py``'s ``train_network`` in its code, ``yolky/RFAD``): RFAD's ConvNet (width 1024, no
  normalisation, He-normal initialisation), trained *centred*: the network's output minus that of its own
  initial weights (``centering``), full-batch (batches of 513: every set up to 51 images per class), SGD with
  momentum 0.9 at a constant lr, PyTorch's ``MSELoss`` (``"mse-mean"``: the mean over images and classes) between
  the centred output divided by the label scale and the stored labels (RFAD's ``mean((f - f_0 - s y)^2) / s^2``),
  weight decay towards the initial weights, at most 20000 steps, validation on 5000 held-out training images
  every 100 steps, keeping the best network and stopping 500 steps after it (``val_every``, ``patience``).
  lr, label scale and weight decay follow RFAD's ``get_best_finite_hypers`` for the dataset and images per class
  (:func:`rfad_hypers`; RFAD adds ``wd * ||p - p_0||^2`` to the loss, which is ``weight_decay = 2 wd`` here).
  Where this differs from RFAD's script: RFAD draws its 500 validation images per class with replacement, here
  5000 distinct training images at random (seed 0); RFAD draws batches with replacement once a set exceeds
  513 images, here epochs of batches of 513. Width 1024 costs about 60x the 128-wide network per image on a CPU;
  ``--width 128`` is the affordable stand-in there.

The networks are :mod:`kdistill.nets`'s (``kdistill.nets.MODELS`` describes each and its source) and so is
the training: optax's ``chain(add_decayed_weights(wd), sgd(lr, momentum))``, which is PyTorch's ``SGD`` (no
dampening, weight decay added to the gradient: ``g = grad + wd * p; v = momentum * v + g; p = p - lr * v``),
with the learning rate of each step set from :func:`learning_rate`.

Labels are used as stored. For MSE the targets are the label rows themselves.
For cross-entropy the target distribution of a row ``y`` (k classes) is:
one-hot rows and probability rows (non-negative, summing to 1) as they are; a
mean-centred one-hot row (``y + 1/k`` is one-hot, KIP's convention) is turned
back into that one-hot row; any other (learned, real-valued) row gives
``softmax(y / T)`` with ``T = label_temperature`` (default 0.5). Learned labels
in this package are regression targets on the centred one-hot scale (the true
class about 1 above the others); they are softened, not argmaxed, so what they say
about the other classes reaches the network. The rule is not continuous at the
one-hot case: an exactly centred one-hot row trains as one-hot, a learned row next
to it as ``softmax(y / T)`` (at T 0.5 about 45% on its class). A set's labels are
all fixed or all learned, so one set does not mix the two. The default is measured, not borrowed:
``benchmarks/transfer_ablation.py``'s label-temperature sweep (T 0.1 to 2 and MSE
on eight learned-label sets of RCIG and RFAD, MNIST and Fashion-MNIST, ipc 1 and
10, ``benchmarks/results/transfer_ablation.md``) found T 0.5 the best temperature
on six of the eight sets and within the networks' spread of the best on the other
two, 2.6 to 19.9 points above T 0.1 (this package's default until 2026-12-07;
``--label-temperature 0.1`` gives it back). At 0.5 a centred one-hot row of 10
classes puts 45% on its class; at 0.1 it put 99.96%, leaving the other classes
almost nothing of what the learned labels say about them. The loss is then
``-sum_c p_c log softmax(f(x))_c``.

An epoch visits every image once in a random order, in batches of
``min(batch_size, m)``; the last, partial batch is padded and masked, so it
averages over its real images only (PyTorch's ``drop_last=False``). Augmentation
(``augment``, per batch, a fresh draw per image):

- ``"none"``;
- ``"dc"``: DC's ``crop_scale_rotate`` (what DC's evaluation applies to MNIST): each image gets one
  of a shift of up to 4 pixels, a scaling of each axis by U[0.8, 1.2] or a rotation by U[-45, 45]
  degrees, filled with the image's mean (``kdistill.nets.dc_augment``);
- ``"crop-flip"``: the usual CIFAR augmentation, a shift of up to 4 pixels (zero padding) and a
  horizontal flip (``kdistill.nets.crop_flip``);
- ``"dsa"``: DSA's ``color_crop_cutout_flip_scale_rotate`` with parameters per image
  (``kdistill.nets.dsa_augment``);
- ``"frepo"``: FRePo's ``[flip_]color_crop_rotate_translate_cutout``, milder than DSA's (brightness +-0.25,
  contrast and saturation by factors in [e^-0.25, e^0.25], zoom 0.8-1.25, +-15 degrees, shifts up to 1/8, a
  quarter-side cutout; border pixels extended; ``kdistill.nets.frepo_augment``);
- ``"auto"`` (:func:`resolve_augment`): the protocol's own: DC's choice for the dataset, ``"dc"`` for MNIST
  and ``"none"`` for every other (KIP's ``convnet-kip`` and ``fc``: ``"none"`` everywhere; FRePo's
  ``convnet-frepo``: ``"frepo"`` everywhere, without flips on digits and Fashion-MNIST).

``flip=False`` (digit datasets: a mirrored digit is another glyph) takes the flips out of
``crop-flip``, ``dsa`` and ``frepo``. Every source of randomness (init, order, augmentation) comes from
``jax.random.key(seed, impl="rbg")``; a run is deterministic for a fixed seed
(on a given backend).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import io
from .. import nets
from .._progress import track
from ..data import Dataset
from ..errors import InvalidInputError
from ..nets import AUGMENTS, LOSSES, make_model, predict
from ._file import preprocessor_for

__all__ = [
    "AUGMENTS",
    "PROTOCOLS",
    "resolve_augment",
    "FiniteSettings",
    "finite_settings",
    "finite_record_key",
    "learning_rate",
    "training_targets",
    "train",
    "predict",
    "accuracy",
    "train_and_evaluate",
    "finite_accuracy",
    "finite_evaluate_file",
    "frepo_steps",
    "rfad_hypers",
    "validation_split",
    "resolve_epochs",
]

SCHEDULES = ("step", "cosine", "constant")
DEFAULT_LABEL_TEMPERATURE = 0.5


@dataclasses.dataclass(frozen=True)
class FiniteSettings:
    """Everything that defines one finite-network training run except the data and the seed.

    Attributes:
      model: a key of :data:`kdistill.nets.MODELS`. width, depth: its size.
      loss: ``"xent"`` (cross-entropy) or ``"mse"``.
      lr, momentum, weight_decay: the optimiser's settings (``momentum`` is Adam's b1). schedule: ``"step"``
        (x0.1 at half the epochs), ``"cosine"`` (to ``lr_floor * lr``) or ``"constant"``.
      epochs, batch_size: training length (None: :func:`frepo_steps` of the set's size) and batch.
      optimizer: ``"sgd"`` or ``"adam"`` (:data:`kdistill.nets.OPTIMIZERS`).
      warmup: steps of linear warm-up from 0 before the schedule (FRePo: 500).
      lr_floor: the cosine schedule's final learning rate as a fraction of ``lr`` (FRePo: 0.01).
      augment: augmentation while training, one of :data:`AUGMENTS` (module docstring).
      flip: whether the augmentation may flip images (False for digits).
      label_temperature: T of ``softmax(labels / T)`` for real-valued labels under
        cross-entropy (see the module docstring).
      centering: train and predict with the network's output minus that of its initial weights, and decay the
        weights towards those initial weights rather than towards zero (RFAD).
      label_scale: the network's (centred) output is divided by this before the loss (RFAD: 2 to 16).
      steps: optimiser steps when ``epochs`` is None (None: FRePo's by set size, :func:`frepo_steps`).
      val_every, patience: validate on held-out images every ``val_every`` steps (0: never) and from step 0,
        keep the best network and stop once ``patience`` steps have passed without a better one (0: never).
      lr_ntk: when > 0, the learning rate is this factor times :func:`kdistill.nets.max_learning_rate` of the
        initial network on 50 held-out images (KIP's) and ``lr`` is ignored; a given ``lr`` turns it off.
    """

    model: str
    width: int
    depth: int
    loss: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    epochs: int | None
    batch_size: int
    augment: str = "none"
    label_temperature: float = DEFAULT_LABEL_TEMPERATURE
    flip: bool = True
    optimizer: str = "sgd"
    warmup: int = 0
    lr_floor: float = 0.0
    centering: bool = False
    label_scale: float = 1.0
    steps: int | None = None
    val_every: int = 0
    patience: int = 0
    lr_ntk: float = 0.0

    @property
    def net(self):
        return make_model(self.model, width=self.width, depth=self.depth)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, dict[str, Any]] = {
    "convnet": dict(loss="xent", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="step", epochs=300,
                    batch_size=256),
    "convnet-kip": dict(loss="mse-mean", lr=0.5, momentum=0.9, weight_decay=2e-3, schedule="cosine", epochs=None,
                        steps=5000, batch_size=100, lr_ntk=1.0),  # lr: only when lr_ntk is turned off
    "fc": dict(loss="xent", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="cosine", epochs=300,
               batch_size=256),
    "convnet-frepo": dict(loss="mse", lr=3e-4, momentum=0.9, weight_decay=0.0, schedule="cosine", epochs=None,
                          batch_size=500, optimizer="adam", warmup=500, lr_floor=0.01),
    "convnet-rfad": dict(loss="mse-mean", lr=1e-3, momentum=0.9, weight_decay=2e-3, schedule="constant",
                         epochs=None, steps=20_000, batch_size=513, centering=True, label_scale=8.0, val_every=100,
                         patience=500),  # lr, label scale and decay: MNIST at 1 image per class (rfad_hypers)
    **{name: dict(loss="xent", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="step", epochs=300,
                  batch_size=256) for name in ("mlp", "alexnet", "vgg11", "resnet18")},  # DC's, as convnet's
}
"""Default training settings per model (see the module docstring for their sources)."""

DC_PROTOCOL_MODELS = ("convnet", "mlp", "alexnet", "vgg11", "resnet18")
"""Models trained under DC's protocol, whose ``augment="auto"`` is DC's augmentation on MNIST."""


AUTO_AUGMENT = {"convnet-frepo": "frepo"}
"""Models whose ``augment="auto"`` is their own protocol's augmentation on every dataset (FRePo's)."""


_RFAD_HYPERS = {  # (lr, label scale, RFAD's wd) by dataset and images per class: get_best_finite_hypers
    "mnist": {1: (1e-3, 8.0, 1e-3), 10: (1e-2, 8.0, 1e-3), 50: (1e-2, 8.0, 0.0)},
    "fashion_mnist": {1: (1e-3, 8.0, 0.0), 10: (1e-2, 8.0, 1e-3), 50: (1e-3, 2.0, 0.0)},
    "svhn": {1: (1e-3, 16.0, 0.0), 10: (1e-2, 8.0, 0.0), 50: (1e-2, 2.0, 0.0)},
    "cifar10": {1: (1e-3, 8.0, 0.0), 10: (1e-3, 2.0, 0.0), 50: (1e-2, 2.0, 0.0)},
    "cifar100": {1: (1e-1, 8.0, 0.0), 10: (1e-1, 2.0, 0.0)},
}


def rfad_hypers(dataset_name: str | None, ipc: float) -> dict[str, Any]:
    """RFAD's finite-network ``lr``, ``label_scale`` and ``weight_decay`` (as this package counts it: twice
    RFAD's ``wd``) for a set of ``ipc`` images per class of ``dataset_name`` (``get_best_finite_hypers`` of
    RFAD's ``utils.py``, with label scaling, no instance norm). RFAD tuned 1, 10 and 50 images per class; other
    sizes take the nearest of those on a log scale, and datasets RFAD did not tune take CIFAR-10's values."""
    table = _RFAD_HYPERS.get((dataset_name or "").lower(), _RFAD_HYPERS["cifar10"])
    near = min(table, key=lambda n: (abs(math.log(max(float(ipc), 1e-9) / n)), n))
    lr, scale, wd = table[near]
    return {"lr": lr, "label_scale": scale, "weight_decay": 2.0 * wd}


def frepo_steps(m: int) -> int:
    """FRePo's training steps for a set of ``m`` images (``step_per_prototpyes`` in its ``script/eval.py``:
    10: 1000, 100: 2000, 500: 5000, 1000: 10000, 2000 and 5000: 40000), taking the next size up; its
    200: 20000 entry (one dataset's ipc 2) is left out so that the steps grow with the set."""
    for top, steps in ((10, 1000), (100, 2000), (500, 5000), (1000, 10_000)):
        if m <= top:
            return steps
    return 40_000


MAX_WIDTH = 16_384
"""Widest finite network accepted (channels or hidden units); KIP's ConvNet uses 1024."""


def finite_settings(model: str = "convnet", **overrides: Any) -> FiniteSettings:
    """The default :class:`FiniteSettings` of ``model`` with ``overrides`` (``None`` values ignored).

    Raises :class:`InvalidInputError` for an unknown model or an impossible setting.
    """
    for name, top in (("width", MAX_WIDTH), ("depth", 32)):
        v = overrides.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top):
            raise InvalidInputError(f"{name} must be an integer in 1 .. {top}, got {v!r}")
    net = make_model(model, width=overrides.get("width"), depth=overrides.get("depth"))
    fields = {f.name for f in dataclasses.fields(FiniteSettings)}
    unknown = set(overrides) - fields
    if unknown:
        raise InvalidInputError(f"unknown finite-network settings {sorted(unknown)}; valid: {sorted(fields)}")
    values = {"model": model, "width": net.width, "depth": net.depth, **PROTOCOLS[model]}
    if overrides.get("lr") is not None and overrides.get("lr_ntk") is None:
        values["lr_ntk"] = 0.0  # a given learning rate replaces the protocol's estimate
    values.update({k: v for k, v in overrides.items() if v is not None})
    s = FiniteSettings(**values)
    if s.loss not in LOSSES:
        raise InvalidInputError(f"unknown loss {s.loss!r}; valid: {', '.join(LOSSES)}")
    if s.augment not in AUGMENTS:
        raise InvalidInputError(f"unknown augmentation {s.augment!r}; valid: auto, {', '.join(AUGMENTS)}")
    if s.schedule not in SCHEDULES:
        raise InvalidInputError(f"unknown schedule {s.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if s.optimizer not in nets.OPTIMIZERS:
        raise InvalidInputError(f"unknown optimizer {s.optimizer!r}; valid: {', '.join(nets.OPTIMIZERS)}")
    if not isinstance(s.warmup, int) or isinstance(s.warmup, bool) or not 0 <= s.warmup <= 10**6:
        raise InvalidInputError(f"warmup must be an integer number of steps in 0 .. 1000000, got {s.warmup!r}")
    if isinstance(s.lr_floor, bool) or not isinstance(s.lr_floor, (int, float)) or not 0 <= s.lr_floor <= 1:
        raise InvalidInputError(f"lr_floor must be a fraction in [0, 1], got {s.lr_floor!r}")
    for name, top in (("epochs", 100_000), ("batch_size", 2**20), ("steps", 10**7), ("val_every", 10**7),
                      ("patience", 10**7)):
        v = getattr(s, name)
        if name in ("epochs", "steps") and v is None:
            continue
        if name in ("val_every", "patience") and v == 0:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
            raise InvalidInputError(f"{name} must be an integer in 1 .. {top}, got {v!r}")
    if not isinstance(s.centering, bool):
        raise InvalidInputError(f"centering must be True or False, got {s.centering!r}")
    if isinstance(s.lr_ntk, bool) or not isinstance(s.lr_ntk, (int, float)) or not 0 <= s.lr_ntk <= 100:
        raise InvalidInputError(f"lr_ntk must be a factor in [0, 100] (0: use lr), got {s.lr_ntk!r}")
    for name in ("lr", "label_temperature", "label_scale"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 < v <= 100):
            raise InvalidInputError(f"{name} must be a number > 0 and <= 100, got {v!r}")
    if not (0 <= s.momentum < 1) or not (math.isfinite(s.weight_decay) and s.weight_decay >= 0):
        raise InvalidInputError(f"need 0 <= momentum < 1 and weight_decay >= 0, got {s.momentum}, {s.weight_decay}")
    return s


def training_targets(labels: Any, loss: str, *, temperature: float = DEFAULT_LABEL_TEMPERATURE
                     ) -> tuple[np.ndarray, str]:
    """The per-image training targets for ``loss`` and a short description of how they were made.

    labels: (m, k) as stored. Returns ``(targets (m, k) float32, mode)``: for
    ``"mse"`` and ``"mse-mean"`` the labels unchanged; for ``"xent"`` a probability row per image
    (rules in the module docstring).
    """
    y = np.asarray(labels, dtype=np.float32)
    if y.ndim != 2 or y.shape[1] < 1:
        raise InvalidInputError(f"labels must be (m, k), got shape {y.shape}")
    if loss in ("mse", "mse-mean"):
        return y, "stored labels (MSE)"
    if loss != "xent":
        raise InvalidInputError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    k = y.shape[1]

    def is_one_hot(a: np.ndarray) -> bool:
        hot = np.isclose(a, 1.0, atol=1e-5)
        return bool(np.all(hot | np.isclose(a, 0.0, atol=1e-5)) and np.all(hot.sum(axis=1) == 1))

    if is_one_hot(y):
        return y, "one-hot"
    if is_one_hot(y + np.float32(1.0 / k)):
        return np.round(y + np.float32(1.0 / k)).astype(np.float32), "centred one-hot -> one-hot"
    if np.all(y >= 0) and np.allclose(y.sum(axis=1), 1.0, atol=1e-4):
        return y, "probabilities"
    z = y.astype(np.float64) / float(temperature)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32), f"softmax(labels / {temperature:g})"


def resolve_augment(augment: str | None, dataset_name: str | None, model: str = "convnet") -> tuple[str, bool]:
    """``(augment, flip)`` for a dataset: ``"auto"``/None is the model's protocol: ``"frepo"`` for
    ``convnet-frepo`` (:data:`AUTO_AUGMENT`), else DC's (``get_daparam``: ``"dc"`` on MNIST for the models of
    :data:`DC_PROTOCOL_MODELS`, ``"none"`` otherwise); flips are off for digit datasets (and for Fashion-MNIST
    under FRePo's protocol)."""
    name = (dataset_name or "").lower()
    if augment in (None, "auto"):
        augment = AUTO_AUGMENT.get(model) or ("dc" if name == "mnist" and model in DC_PROTOCOL_MODELS else "none")
    if augment not in AUGMENTS:
        raise InvalidInputError(f"unknown augmentation {augment!r}; valid: auto, {', '.join(AUGMENTS)}")
    if model == "convnet-frepo" and name == "fashion_mnist":  # FRePo flips CIFAR only (its script/eval.py)
        return augment, False
    return augment, "flip" in nets.dsa_strategy(name)


_KEY_SETTINGS = (("epochs", "epochs"), ("width", "width"), ("depth", "depth"), ("lr", "lr"), ("augment", "augment"),
                 ("loss", "loss"), ("label_temperature", "label temperature"))


def finite_record_key(model: str, dataset_name: str | None = None, **given: Any) -> str:
    """The name under which a run's ``summary.json`` records an evaluation of ``model`` with the settings
    ``given`` (``None`` values: the protocol's): the model's name when every given setting is the protocol's,
    else the name and the settings that differ, e.g. ``"convnet (loss mse, label temperature 0.3)"``, so an
    evaluation under other settings is recorded beside the protocol's rather than in its place.

    ``augment`` is compared as resolved for ``dataset_name`` (:func:`resolve_augment`); a given ``lr`` always
    differs for the models whose protocol sets it per set (``convnet-kip`` from the NTK, ``convnet-rfad`` from
    RFAD's table), and a given ``epochs`` for those that take FRePo's steps by set size.
    """
    unknown = set(given) - {name for name, _ in _KEY_SETTINGS}
    if unknown:
        raise InvalidInputError(f"unknown finite-network settings {sorted(unknown)}; valid: "
                                f"{', '.join(name for name, _ in _KEY_SETTINGS)}")
    default = finite_settings(model)
    default_values = {**default.as_dict(), "augment": resolve_augment(None, dataset_name, model)[0]}
    if default.lr_ntk or model == "convnet-rfad":
        default_values["lr"] = None  # set per set: no given lr is the protocol's
    parts = []
    for name, shown in _KEY_SETTINGS:
        value = given.get(name)
        if name == "augment" and value is not None:
            value = resolve_augment(value, dataset_name, model)[0]
        if value is None or value == default_values[name]:
            continue
        parts.append(f"{shown} {value:g}" if isinstance(value, float) else f"{shown} {value}")
    return f"{model} ({', '.join(parts)})" if parts else model


def learning_rate(s: FiniteSettings, step: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``s.epochs`` epochs (resolved: not None): after
    ``s.warmup`` steps of a linear rise from 0 (optax's ``linear_schedule``, as FRePo), constant, x0.1 from
    epoch ``epochs // 2`` on (DC's step decay), or cosine from ``lr`` to ``lr_floor * lr`` over the steps
    after the warm-up (optax's ``cosine_decay_schedule``)."""
    if step < s.warmup:
        return s.lr * step / s.warmup
    if s.schedule == "step":
        return s.lr * (0.1 if step >= (s.epochs // 2) * steps_per_epoch else 1.0)
    if s.schedule == "cosine":
        total = max(s.epochs * steps_per_epoch - s.warmup, 1)
        t = min(step - s.warmup, total) / total
        return s.lr * (s.lr_floor + (1.0 - s.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
    return s.lr


def _check_data(images, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images, dtype=np.float32)
    y = np.asarray(labels, dtype=np.float32)
    if x.ndim != 4:
        raise InvalidInputError(f"images must be (m, h, w, c), got shape {x.shape}")
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise InvalidInputError(f"labels must be (m, k) with m = {x.shape[0]} rows, got shape {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidInputError("images or labels contain NaN or inf")
    return x, y


def resolve_epochs(s: FiniteSettings, m: int) -> FiniteSettings:
    """``s`` with ``epochs`` None replaced by the epochs that make ``s.steps`` steps, or :func:`frepo_steps`
    ``(m)`` without them."""
    if s.epochs is not None:
        return s
    per_epoch = -(-m // min(s.batch_size, m))
    steps = frepo_steps(m) if s.steps is None else s.steps
    return dataclasses.replace(s, epochs=-(-steps // per_epoch))


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """A trained network: ``params`` for ``settings.net.apply`` (centred on ``anchor``, its initial weights,
    when ``settings.centering``), the mean training loss per epoch run, how the labels were turned into
    targets, and with validation the step of the network kept (``best_step``), its held-out accuracy and the
    steps run before stopping."""

    params: Any
    settings: FiniteSettings
    losses: np.ndarray
    label_mode: str
    anchor: Any = None
    best_step: int | None = None
    val_accuracy: float | None = None
    steps_run: int | None = None

    def accuracy(self, x, y) -> float:
        """Test accuracy of this network on ``x: (n, h, w, c)``, ``y: (n,)`` ints."""
        return accuracy(self.settings.net, self.params, x, y, anchor=self.anchor)


NTK_LR_IMAGES = 50
"""Held-out images on which ``lr_ntk`` estimates the largest stable learning rate (KIP's
``empirical_ntk_num_inputs``)."""


def _host_copy(tree):
    return jax.tree.map(np.array, jax.device_get(tree))


def train(images, labels, settings: FiniteSettings, *, seed: int, progress: bool = False,
          description: str = "", x_val=None, y_val=None) -> TrainResult:
    """Train ``settings.net`` on ``images: (m, h, w, c)`` with ``labels: (m, k)`` from ``jax.random.key(seed)``.

    With ``settings.val_every`` the held-out ``x_val: (n, h, w, c)``, ``y_val: (n,)`` ints (in the images'
    space) are scored at step 0 and every ``val_every`` steps (rounded to whole epochs), and the best network is
    returned (ties keep the earlier); training stops ``patience`` steps after the best.
    """
    x, y = _check_data(images, labels)
    settings = resolve_epochs(settings, x.shape[0])
    validating = bool(settings.val_every)
    if validating or settings.lr_ntk:
        if x_val is None or y_val is None:
            why = (f"validates on held-out images every {settings.val_every} steps" if validating else
                   "sets its learning rate from the NTK on 50 held-out images")
            raise InvalidInputError(f"{settings.model}'s protocol {why}: pass x_val and y_val, or give "
                                    f"{'val_every=0' if validating else 'an lr'}")
        x_val = _check_test(x_val, y_val, x.shape[1:], y.shape[1])
    t, mode = training_targets(y, settings.loss, temperature=settings.label_temperature)
    net = settings.net
    key_init, key_train = jax.random.split(nets.seed_key(seed))
    params = nets.init_params(key_init, tuple(x.shape[1:]), y.shape[1], net=net)
    if settings.lr_ntk:
        lr = settings.lr_ntk * nets.max_learning_rate(net, params, x_val[:NTK_LR_IMAGES], settings.loss, y.shape[1])
        settings = dataclasses.replace(settings, lr=float(lr))
    # the initial weights, kept apart: the training steps donate (overwrite) the buffers of ``params``
    anchor = jax.tree.map(jnp.copy, params) if settings.centering else None
    state = nets.init_optimizer(settings.optimizer, params, learning_rate=settings.lr, momentum=settings.momentum,
                                weight_decay=0.0 if settings.centering else settings.weight_decay)
    m = x.shape[0]
    per_epoch = -(-m // min(settings.batch_size, m))
    chunk = max(1, round(settings.val_every / per_epoch)) if validating else settings.epochs
    common = dict(key=key_train, batch=settings.batch_size, net=net, loss=settings.loss,
                  lr_at=lambda step, steps: learning_rate(settings, step, steps), augment=settings.augment,
                  flip=settings.flip, opt=settings.optimizer, anchor=anchor, scale=1.0 / settings.label_scale,
                  anchor_decay=settings.weight_decay)
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    if anchor is not None and settings.augment == "none" and validating:  # once, not per validated piece
        common["anchor_logits"] = jnp.asarray(nets.predict(net, anchor, xj), xj.dtype)
    if not validating:
        params, _, losses = nets.run_epochs(params, state, xj, tj, epochs=settings.epochs, progress=progress,
                                            description=description or f"{settings.model} epochs", **common)
        return TrainResult(params, settings, losses, mode, anchor=anchor, steps_run=settings.epochs * per_epoch)
    val_base = predict(net, anchor, x_val) if anchor is not None else 0.0  # the anchor's logits, once

    def score(p) -> float:
        return float(np.mean((predict(net, p, x_val) - val_base).argmax(axis=1) == np.asarray(y_val)))

    best = {"acc": score(params), "epoch": 0, "params": _host_copy(params)}
    losses, done = [], 0
    pieces = range(-(-settings.epochs // chunk))
    for _ in track(pieces, total=len(pieces), description=description or f"{settings.model} (validating)",
                   enabled=progress):
        n = min(chunk, settings.epochs - done)
        params, state, part = nets.run_epochs(params, state, xj, tj, epochs=n, first_epoch=done, **common)
        losses.append(part)
        done += n
        acc = score(params)
        if acc > best["acc"]:
            best = {"acc": acc, "epoch": done, "params": _host_copy(params)}
        elif settings.patience and (done - best["epoch"]) * per_epoch >= settings.patience:
            break
    return TrainResult(jax.tree.map(jnp.asarray, best["params"]), settings, np.concatenate(losses), mode,
                       anchor=anchor, best_step=best["epoch"] * per_epoch, val_accuracy=best["acc"],
                       steps_run=done * per_epoch)


def accuracy(net, params, x, y, *, anchor=None) -> float:
    """Fraction of ``x: (n, h, w, c)`` whose argmax logit (centred on ``anchor``'s, if given) equals
    ``y: (n,)`` ints."""
    y = np.asarray(y)
    return float(np.mean(predict(net, params, x, anchor).argmax(axis=1) == y))


def _check_test(x_test, y_test, image_shape, k) -> np.ndarray:
    x_test = np.asarray(x_test, dtype=np.float32)
    if tuple(x_test.shape[1:]) != tuple(image_shape):
        raise InvalidInputError(
            f"test images are {tuple(x_test.shape[1:])} but the training images are {tuple(image_shape)}")
    y_test = np.asarray(y_test)
    if y_test.shape != (x_test.shape[0],) or (y_test.size and (y_test.min() < 0 or y_test.max() >= k)):
        raise InvalidInputError(f"y_test must be ({x_test.shape[0]},) ints in [0, {k}), got shape {y_test.shape}")
    return x_test


def train_and_evaluate(images, labels, x_test, y_test, *, model: str = "convnet", seed: int = 0,
                       epochs: int | None = None, progress: bool = False, **overrides: Any) -> float:
    """Test accuracy of ``model`` trained on ``(images (m, h, w, c), labels (m, k))`` with ``seed``.

    ``x_test: (n, h, w, c)`` must already be in the images' (preprocessed) space; ``y_test: (n,)`` ints.
    ``overrides``: any :class:`FiniteSettings` field (width, lr, augment, ...).
    """
    s = finite_settings(model, epochs=epochs, **overrides)
    x, y = _check_data(images, labels)
    x_test = _check_test(x_test, y_test, x.shape[1:], y.shape[1])
    res = train(x, y, s, seed=seed, progress=progress)
    return accuracy(s.net, res.params, x_test, y_test)


def finite_accuracy(images, labels, x_test, y_test, *, model: str = "convnet", seeds: int = 5,
                    epochs: int | None = None, progress: bool = False, x_val=None, y_val=None,
                    first_seed: int = 0, **overrides: Any) -> dict:
    """Train ``model`` with seeds ``first_seed .. first_seed + seeds - 1`` and summarise the test accuracies.

    Returns a JSON-able dict: ``mean``, ``std`` (population std over seeds, as DC
    reports), ``accuracies``, ``seeds``, ``epochs``, ``seconds_per_seed`` (wall
    clock of training + testing, the first seed including compilation),
    ``seconds``, ``label_mode``, ``final_losses`` (mean training loss of the last
    epoch per seed; ``None`` where it became NaN/inf), ``diverged_seeds`` (those
    seeds: lower the lr; counted from ``first_seed``) and the full ``settings``; for a protocol that validates
    (``x_val``, ``y_val``: held-out images in the images' space), ``best_steps``, ``steps_run`` and
    ``val_accuracies`` per seed. ``first_seed`` > 0 trains further networks for an evaluation of seeds
    ``0 .. first_seed-1`` (:func:`merge_finite_results` joins the two).
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise InvalidInputError(f"seeds must be an integer >= 1, got {seeds!r}")
    if not isinstance(first_seed, int) or isinstance(first_seed, bool) or first_seed < 0:
        raise InvalidInputError(f"first_seed must be an integer >= 0, got {first_seed!r}")
    x, y = _check_data(images, labels)
    s = resolve_epochs(finite_settings(model, epochs=epochs, **overrides), x.shape[0])
    x_test = _check_test(x_test, y_test, x.shape[1:], y.shape[1])
    accs, secs, final, mode, runs = [], [], [], "", []
    last_seed = first_seed + seeds
    for seed in range(first_seed, last_seed):
        t0 = time.perf_counter()
        res = train(x, y, s, seed=seed, progress=progress, description=f"{model} seed {seed + 1}/{last_seed}",
                    x_val=x_val, y_val=y_val)
        runs.append(res)
        accs.append(res.accuracy(x_test, y_test))
        secs.append(time.perf_counter() - t0)
        last = float(res.losses[-1])
        final.append(last if math.isfinite(last) else None)
        mode = res.label_mode
        if progress:  # one line per seed stays in the scrollback and in logs, whatever the bar did
            print(f"{model} seed {seed + 1}/{last_seed}: test accuracy {100 * accs[-1]:.2f}% in {secs[-1]:.1f} s "
                  f"(final loss {last:.4g})", file=sys.stderr, flush=True)
    estimated = {} if not s.lr_ntk else {"lrs": [r.settings.lr for r in runs]}
    validated = {} if not s.val_every else {
        "best_steps": [r.best_step for r in runs], "steps_run": [r.steps_run for r in runs],
        "val_accuracies": [r.val_accuracy for r in runs], "n_val": int(np.asarray(x_val).shape[0])}
    return {
        "model": model,
        "mean": float(np.mean(accs)),
        "std": float(np.std(accs)),
        "accuracies": [float(a) for a in accs],
        "seeds": seeds,
        **({"first_seed": first_seed} if first_seed else {}),
        "epochs": s.epochs,
        "seconds_per_seed": float(np.mean(secs)),
        "seconds": [round(v, 3) for v in secs],
        "m": int(x.shape[0]),
        "n_test": int(x_test.shape[0]),
        "label_mode": mode,
        "final_losses": final,
        "diverged_seeds": [first_seed + i for i, v in enumerate(final) if v is None],
        "settings": {**s.as_dict(), **({"lr": None} if s.lr_ntk else {})},  # estimated per seed: "lrs"
        **validated,
        **estimated,
    }


def validation_split(dataset: Dataset, size: int = 5000, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, labels)`` of ``size`` distinct random training images of ``dataset`` (at most a fifth of
    them): the held-out images of protocols that validate while training (``convnet-rfad``)."""
    from ..krr import effective_val_size, held_out_indices

    n = int(dataset.x_train.shape[0])
    idx = held_out_indices(n, effective_val_size(size, n), seed=seed)
    return idx, np.asarray(dataset.y_train)[idx]


def _file_plan(path, dataset: Dataset, model: str, epochs: int | None, augment: str | None,
               preprocess: str | None, overrides: dict) -> tuple[Any, Any, dict]:
    """``(the loaded set, its preprocessor, the settings' overrides)`` with which :func:`finite_evaluate_file`
    trains ``model`` on the file: the protocol's augmentation for the dataset and RFAD's tuned settings."""
    augment, flip = resolve_augment(augment, dataset.name, model)
    finite_settings(model, epochs=epochs, **overrides)  # fail on bad settings before any work
    ds = io.load(path)
    prep = preprocessor_for(ds, dataset, path=path, preprocess=preprocess)
    tuned = {}
    if model == "convnet-rfad":  # RFAD's settings for this dataset and set size, unless given
        m, k = np.asarray(ds.labels).shape
        tuned = {name: v for name, v in rfad_hypers(dataset.name, m / max(k, 1)).items()
                 if overrides.get(name) is None}
    return ds, prep, {"augment": augment, "flip": flip, **overrides, **tuned}


def finite_file_settings(path: str | Path, dataset: Dataset, *, model: str = "convnet", epochs: int | None = None,
                         augment: str | None = None, preprocess: str | None = None, **overrides: Any) -> dict:
    """What :func:`finite_evaluate_file` with these arguments records about its networks, without training any:
    ``model``, ``dataset``, ``preprocess``, ``epochs``, ``m`` and the full ``settings``."""
    ds, prep, kw = _file_plan(path, dataset, model, epochs, augment, preprocess, overrides)
    m = int(np.asarray(ds.images).shape[0])
    s = resolve_epochs(finite_settings(model, epochs=epochs, **kw), m)
    return {"model": model, "dataset": dataset.name, "preprocess": prep.kind, "epochs": s.epochs, "m": m,
            "settings": {**s.as_dict(), **({"lr": None} if s.lr_ntk else {})}}


def finite_evaluate_file(path: str | Path, dataset: Dataset, *, model: str = "convnet", seeds: int = 5,
                         epochs: int | None = None, augment: str | None = None, preprocess: str | None = None,
                         progress: bool = False, first_seed: int = 0, **overrides: Any) -> dict:
    """:func:`finite_accuracy` of the distilled set in ``path`` on ``dataset``'s full test set.

    Test images go through the preprocessing stored in the file (files without it
    use ``preprocess`` fitted on the training set, default none). ``augment`` None or ``"auto"``:
    the model's protocol for the dataset (:func:`resolve_augment`).
    """
    ds, prep, kw = _file_plan(path, dataset, model, epochs, augment, preprocess, overrides)
    s = finite_settings(model, epochs=epochs, **kw)
    val = {}
    if s.val_every or s.lr_ntk:  # a given lr has already turned lr_ntk off (finite_settings)
        idx, y_val = validation_split(dataset)
        val = {"x_val": prep.apply(dataset.x_train[idx]), "y_val": y_val}
    res = finite_accuracy(ds.images, ds.labels, prep.apply(dataset.x_test), dataset.y_test, model=model,
                          seeds=seeds, epochs=epochs, progress=progress, first_seed=first_seed, **val, **kw)
    return {"file": str(path), "dataset": dataset.name, "preprocess": prep.kind, **res}


_PER_SEED = ("accuracies", "seconds", "final_losses", "best_steps", "steps_run", "val_accuracies", "lrs")
"""The lists of a finite result with one entry per network, in seed order."""
_SAME = ("model", "dataset", "preprocess", "epochs", "m", "n_test", "n_val", "label_mode", "settings")
"""What two finite results must share to be one evaluation."""


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing a recorded result."""
    return json.loads(json.dumps(value))


def check_addable(old: dict, new: dict) -> int:
    """The number ``k`` of networks (seeds ``0 .. k-1``) in the recorded finite result ``old``, after checking that
    networks described by ``new`` (a result, or :func:`finite_file_settings` before training) would belong to the
    same evaluation: the same file name and, of :data:`_SAME`, every field both give. Otherwise
    :class:`~kdistill.errors.InvalidInputError` naming what differs."""
    accs = old.get("accuracies")
    k = len(accs) if isinstance(accs, list) else 0
    if old.get("first_seed", 0) != 0 or old.get("seeds") != k or k == 0 or any(
            not isinstance(old.get(name), list) or len(old[name]) != k for name in _PER_SEED if name in old):
        raise InvalidInputError(f"the recorded evaluation does not hold one entry per network for seeds 0..k-1 "
                                f"(seeds {old.get('seeds')!r}, first seed {old.get('first_seed', 0)!r}); drop --add "
                                "to evaluate afresh")
    differ = [name for name in _SAME if name in new and _plain(old.get(name)) != _plain(new[name])]
    if "settings" in differ and isinstance(old.get("settings"), dict):
        a, b = _plain(old["settings"]), _plain(new["settings"])
        changed = [f"{n} {a.get(n)!r} recorded, {b.get(n)!r} now" for n in sorted(set(a) | set(b))
                   if a.get(n) != b.get(n)]
        differ[differ.index("settings")] = f"settings ({', '.join(changed)})"
    if old.get("file") and new.get("file") and Path(old["file"]).name != Path(new["file"]).name:
        differ.append(f"file ({Path(old['file']).name} recorded, {Path(new['file']).name} now)")
    if differ:
        raise InvalidInputError(f"the recorded evaluation differs in {'; '.join(differ)}: its networks were trained "
                                "otherwise (a default changed since?); drop --add to evaluate afresh")
    return k


def merge_finite_results(old: dict, new: dict) -> dict:
    """One finite result from ``old`` (networks of seeds ``0 .. k-1``) and ``new`` (seeds ``k ..``, made with
    ``first_seed=k``): the per-network lists joined, mean and std over all networks. Results that are not one
    evaluation (other settings, data or seeds; :func:`check_addable`) raise
    :class:`~kdistill.errors.InvalidInputError`."""
    k = check_addable(old, {name: new.get(name) for name in _SAME} | {"file": new.get("file")})
    if new.get("first_seed", 0) != k:
        raise InvalidInputError(f"the new networks start at seed {new.get('first_seed', 0)}, not {k}, the "
                                "first seed after the recorded ones")
    n = len(new.get("accuracies") or [])
    if n == 0 or any((name in old) != (name in new) or len(new.get(name) or []) != n for name in _PER_SEED
                     if name in old or name in new):
        raise InvalidInputError("the new networks' result does not hold one entry per network in the lists the "
                                "recorded one has")
    merged = {**old, **{name: list(old[name]) + list(new[name]) for name in _PER_SEED if name in old}}
    accs = merged["accuracies"]
    merged.update(seeds=len(accs), mean=float(np.mean(accs)), std=float(np.std(accs)),
                  seconds_per_seed=float(np.mean(merged["seconds"])),
                  diverged_seeds=[i for i, v in enumerate(merged["final_losses"]) if v is None])
    merged.pop("first_seed", None)
    return merged
