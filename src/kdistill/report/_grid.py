"""Image grids of distilled sets: one row per class, in pixel space."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import InvalidInputError

__all__ = ["image_grid", "rows_by_class", "displayable"]


def displayable(pixels: np.ndarray, *, slack: float = 0.1) -> tuple[np.ndarray, bool]:
    """Map images to [0, 1] for display: clip those within [-slack, 1 + slack], min-max rescale the others
    (closed-form distilled images can lie far outside pixel range). Returns the images and whether any
    was rescaled."""
    out = np.empty_like(pixels)
    rescaled = False
    for i, img in enumerate(pixels):
        lo, hi = float(img.min()), float(img.max())
        if lo >= -slack and hi <= 1 + slack:
            out[i] = np.clip(img, 0.0, 1.0)
        else:
            rescaled = True
            out[i] = (img - lo) / (hi - lo) if hi > lo else 0.5
    return out, rescaled


def rows_by_class(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices of the images of each class (class = argmax of the label row)."""
    cls = np.asarray(labels).argmax(axis=1)
    return [np.flatnonzero(cls == c) for c in range(num_classes)]


def image_grid(
    pixels: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    max_per_row: int = 20,
    title: str | None = None,
    rows: Sequence[tuple[str, np.ndarray]] | None = None,
) -> Path:
    """Draw ``pixels: (m, h, w, c)`` in [0, 1] as a PNG grid, one row per class.

    ``labels: (m, k)``; ``rows``, when given, replaces the per-class layout by
    explicit ``(row title, indices)`` pairs. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3):
        raise InvalidInputError(f"images must be (m, h, w, 1 or 3) to draw, got {pixels.shape}")
    pixels, rescaled = displayable(pixels)
    if rescaled and title:
        title += " (some images rescaled to [0, 1])"
    k = labels.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    if rows is None:
        rows = [(names[c] if c < len(names) else str(c), idx) for c, idx in enumerate(rows_by_class(labels, k))]
    rows = [(t, np.asarray(i)[:max_per_row]) for t, i in rows if len(i)]
    ncols = max(len(i) for _, i in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(max(1.0 * ncols, 4.5) + 1.2, 1.0 * len(rows) + 0.4),
                             squeeze=False)
    for r, (name, idx) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(idx):
                img = pixels[idx[c]]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path
