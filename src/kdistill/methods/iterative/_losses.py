"""Losses of KRR-based distillation, as plain functions (optax ``losses`` style).

Every loss takes the KRR predictions on a target batch and returns a scalar:

    loss(pred: (b, k), targets: (b, k), weights: (b,), params: dict) -> scalar

``targets`` are mean-centred one-hot rows; ``weights`` come from the target sampler
(all ones for uniform batches; importance weights keep a sampled loss unbiased). A
loss with learned parameters (Platt's temperature) declares their initial values in
``Loss.init``; iterative methods optimise them together with the support set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from ...errors import InvalidInputError

__all__ = ["Loss", "LOSSES", "get_loss", "mse", "platt"]


def mse(pred, targets, weights, params: Mapping[str, Any] | None = None):
    """KIP's loss: ``1/2 mean_i w_i || y_i - pred_i ||^2`` (arXiv:2011.00050)."""
    per_example = jnp.sum((targets - pred) ** 2, axis=1)
    return 0.5 * jnp.mean(weights * per_example)


def platt(pred, targets, weights, params: Mapping[str, Any]):
    """RFAD's Platt-scaled loss (arXiv:2210.12067): cross-entropy of ``exp(log_temp) * pred``
    against the class of each target row, ``mean_i w_i CE(softmax(tau pred_i), argmax y_i)``,
    with the log-temperature ``params["log_temp"]`` learned."""
    logits = jnp.exp(params["log_temp"]) * pred
    labels = jnp.argmax(targets, axis=1)
    log_p = jax.nn.log_softmax(logits, axis=1)
    nll = -jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]
    return jnp.mean(weights * nll)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A named loss and the initial values of its learned parameters (empty for ``mse``)."""

    name: str
    fn: Callable[..., Any]
    init: Mapping[str, float]
    doc: str

    def per_example(self, pred, targets, learned: Mapping[str, Any]):
        """Each row's loss ``(b,)`` (weight 1), what smart-pick draws by; ``learned`` holds the loss's parameters
        (one that is missing takes its initial value)."""
        params = {k: learned.get(k, v) for k, v in self.init.items()}
        one = jnp.ones(1, pred.dtype)
        return jax.vmap(lambda p, t: self.fn(p[None], t[None], one, params))(pred, jnp.asarray(targets, pred.dtype))


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", mse, {}, "1/2 squared error of the KRR predictions (KIP)"),
    # log_temp 0: the temperature starts at 1 and is learned with the support set
    "platt": Loss("platt", platt, {"log_temp": 0.0}, "cross-entropy of temperature-scaled KRR predictions (RFAD)"),
}
"""Losses by name (``--loss``)."""


def get_loss(name: str) -> Loss:
    if name not in LOSSES:
        raise InvalidInputError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[name]
