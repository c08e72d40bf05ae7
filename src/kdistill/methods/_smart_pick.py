"""SMART-PICK (Distil-Boost, arXiv:2307.08086): target batches drawn by each example's loss.

The paper draws a training example ``p`` with probability ``P(p) = phi(p) / sum_q phi(q)``, ``phi`` the
distillation loss of ``p`` under the model of the current distilled set, so batches concentrate on
what the set still gets wrong. Here (``--sampler smart-pick``):

- ``phi`` is the method's own per-example loss (:attr:`IterativeMethod.scores`; KIP: the squared error,
  or Platt's cross-entropy, of the KRR prediction from the current support set).
- Scoring every example costs an n x m kernel, so scores are refreshed every ``pick_every`` steps
  (from the state at that step; with a held batch, at the first held step ``pick_every`` or more after
  the last), optionally on a random candidate pool of ``pick_pool`` images (the others cannot be drawn
  until the next refresh).
- A floor keeps every candidate drawable: ``P = (1 - floor) phi / sum phi + floor / n``.
- By default batches stay class-balanced (the uniform sampler's counts per class, drawn within each
  class by ``P``); ``pick_global`` draws from the whole pool.
- Weights: the paper's rule, as we read it, has none (a biased sampler on purpose: the batch loss
  puts more weight on hard examples). ``pick_unbiased`` weights each drawn image by ``1 / (n_c P)``,
  the importance weight under which the batch loss estimates the uniform (class-balanced) average;
  unbiased draws are made with replacement, which makes that exact (without replacement the weights
  would be off when a batch is a large share of its class, as with the default 5000 of a 10000 pool).
  The weights are not normalised by their batch mean: that ratio estimator is biased (1.28x in a test).
- A candidate pool (``pick_pool``) smaller than the target batch, or a class with fewer candidates than
  its share, gives smaller batches (without replacement) until the next refresh.

The probabilities, the step they were computed at and the time spent are the sampler's state
(``state_dict``), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ..errors import InvalidInputError
from .iterative import SAMPLERS

__all__ = ["SmartPick", "smart_pick_sampler", "pick_probabilities"]


def pick_probabilities(phi: np.ndarray, groups: list[np.ndarray], floor: float) -> np.ndarray:
    """Per group of indices into ``phi``: ``(1 - floor) phi / sum phi + floor / size`` (uniform where the
    group's scores are all 0). Returns one probability per entry of ``phi``; each group sums to 1."""
    phi = np.nan_to_num(np.asarray(phi, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    p = np.zeros_like(phi)
    for g in groups:
        if g.size == 0:
            continue
        total = phi[g].sum()
        share = phi[g] / total if total > 0 else np.full(g.size, 1.0 / g.size)
        p[g] = (1.0 - floor) * share + floor / g.size
    return p


class SmartPick:
    """Importance-sampled target batches (module docstring); ``sampler(step, state) -> (indices, weights)``."""

    def __init__(self, labels: np.ndarray, batch_size: int, *, num_classes: int, seed: int, x: np.ndarray,
                 targets: np.ndarray, scores: Callable[[Any, np.ndarray, np.ndarray], np.ndarray] | None,
                 every: int = 50, pool: int = 10_000, floor: float = 0.1, unbiased: bool = False,
                 per_class: bool = True):
        if scores is None:
            raise InvalidInputError("--sampler smart-pick needs a method that scores examples by their loss "
                                    "(kip, rfad); use --sampler uniform")
        if batch_size < num_classes:
            raise InvalidInputError(f"target batch {batch_size} is smaller than the number of classes {num_classes}")
        self.labels = np.asarray(labels)
        self.n, self.k = self.labels.shape[0], num_classes
        self.batch = min(int(batch_size), self.n)
        self.seed, self.x, self.targets, self.scores = seed, x, targets, scores
        self.every, self.pool, self.floor = int(every), int(pool), float(floor)
        self.unbiased, self.per_class = bool(unbiased), bool(per_class)
        self.p = np.zeros(self.n)  # probability of each pool image (per class, or over the pool)
        self.refreshed = -1
        self.seconds = 0.0

    def _candidates(self, step: int) -> np.ndarray:
        if not self.pool or self.pool >= self.n:
            return np.arange(self.n)
        rng = np.random.default_rng([self.seed, step, 0x7069636B])  # "pick"
        return np.sort(rng.choice(self.n, size=self.pool, replace=False))

    def _groups(self, idx: np.ndarray) -> list[np.ndarray]:
        if not self.per_class:
            return [idx]
        return [idx[self.labels[idx] == c] for c in range(self.k)]

    def refresh(self, step: int, state: Any) -> None:
        """Score the candidates under the support set in ``state`` and set the probabilities."""
        t0 = time.perf_counter()
        cand = self._candidates(step)
        phi = np.zeros(self.n)
        phi[cand] = np.asarray(self.scores(state, self.x[cand], self.targets[cand]), dtype=np.float64)
        self.p = pick_probabilities(phi, self._groups(cand), self.floor)
        self.refreshed = step
        self.seconds += time.perf_counter() - t0

    def __call__(self, step: int, state: Any = None) -> tuple[np.ndarray, np.ndarray]:
        # by elapsed steps, not step % every: a method that holds its batch (RFAD's redraw_every R) calls only at
        # multiples of R, where step % every == 0 would refresh every lcm(R, every) steps
        if self.refreshed < 0 or step - self.refreshed >= self.every:
            self.refresh(step, state)
        rng = np.random.default_rng([self.seed, step])
        drawable = np.flatnonzero(self.p > 0)
        groups = self._groups(drawable)
        if self.per_class:
            base, extra = divmod(self.batch, self.k)
            order = rng.permutation(self.k)
            wants = np.zeros(self.k, dtype=int)
            wants[order] = [base + (1 if r < extra else 0) for r in range(self.k)]
        else:
            wants = np.array([self.batch])
        parts, weights = [], []
        for g, want in zip(groups, wants):
            want = min(int(want), g.size)
            if want == 0:
                continue
            pg = self.p[g] / self.p[g].sum()
            pick = rng.choice(g.size, size=want, replace=self.unbiased, p=pg)  # unbiased: with replacement
            parts.append(g[pick])
            weights.append(1.0 / (g.size * pg[pick]) if self.unbiased else np.ones(want))
        idx = np.concatenate(parts)
        w = np.concatenate(weights)
        order = np.argsort(idx, kind="stable")
        return idx[order], w[order]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"p": self.p, "refreshed": np.asarray(self.refreshed), "seconds": np.asarray(self.seconds)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        p = np.asarray(state["p"], dtype=np.float64)
        if p.shape != (self.n,):
            raise InvalidInputError(f"smart-pick state holds {p.shape[0]} probabilities for a pool of {self.n}")
        self.p, self.refreshed, self.seconds = p, int(state["refreshed"]), float(state.get("seconds", 0.0))


def smart_pick_sampler(labels, batch_size, *, num_classes, seed, x=None, targets=None, scores=None, settings=None,
                       **_: Any) -> SmartPick:
    """The ``smart-pick`` factory: a :class:`SmartPick` with the driver's ``pick_*`` settings."""
    opts = {} if settings is None else dict(every=settings.pick_every, pool=settings.pick_pool,
                                           floor=settings.pick_floor, unbiased=settings.pick_unbiased,
                                           per_class=not settings.pick_global)
    return SmartPick(labels, batch_size, num_classes=num_classes, seed=seed, x=x, targets=targets, scores=scores,
                     **opts)


SAMPLERS["smart-pick"] = smart_pick_sampler
