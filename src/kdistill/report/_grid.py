"""Figures of distilled sets: every image in a wrapped grid grouped by class, and learned labels as a heatmap.

Images are grouped by class (:func:`image_classes`): the argmax of their label, or, when the labels
were learned, the class each was *initialised* for: every initialisation lays the set out class by
class, ``ipc`` images each, so image ``i`` started as class ``i // ipc``; the argmax of learned labels
can drift, and grouping by it would give rows of uneven length that say nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import InvalidInputError

__all__ = ["image_grid", "rows_by_class", "displayable", "image_classes", "labels_are_learned", "label_heatmap"]

_WIDTH = 10.5  # inches the image columns aim to fill (a report column at 80 dpi)
_DPI = 80
_RESCALED = "tab:red"


def displayable(pixels: np.ndarray, *, slack: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Map images to [0, 1] for display: clip those within [-slack, 1 + slack], min-max rescale the others
    (closed-form distilled images can lie far outside pixel range). Returns the images and a boolean per
    image saying whether it was rescaled."""
    out = np.empty_like(pixels)
    rescaled = np.zeros(len(pixels), dtype=bool)
    for i, img in enumerate(pixels):
        lo, hi = float(img.min()), float(img.max())
        if lo >= -slack and hi <= 1 + slack:
            out[i] = np.clip(img, 0.0, 1.0)
        else:
            rescaled[i] = True
            out[i] = (img - lo) / (hi - lo) if hi > lo else 0.5
    return out, rescaled


def labels_are_learned(labels: np.ndarray) -> bool:
    """Whether label rows are anything but (scaled, shifted) one-hot rows: one top value, the rest equal."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        return False
    top = y.max(axis=1, keepdims=True)
    is_top = np.isclose(y, top)
    rest = np.where(is_top, np.nan, y)
    spread = np.nanmax(rest, axis=1) - np.nanmin(rest, axis=1)
    return not (np.all(is_top.sum(axis=1) == 1) and np.allclose(spread, 0.0))


def image_classes(labels: np.ndarray, ipc: int | None = None) -> np.ndarray:
    """The class each image stands for: the argmax of its label, or, when the labels were learned and the
    set holds ``ipc`` images of every class, the class it was initialised for, ``i // ipc`` (how every
    initialisation lays sets out)."""
    labels = np.asarray(labels)
    m, k = labels.shape
    if ipc and ipc * k == m and labels_are_learned(labels):
        return np.arange(m) // ipc
    return labels.argmax(axis=1)


def rows_by_class(labels: np.ndarray, num_classes: int, *, ipc: int | None = None) -> list[np.ndarray]:
    """Indices of the images of each class (:func:`image_classes`)."""
    cls = image_classes(labels, ipc)
    return [np.flatnonzero(cls == c) for c in range(num_classes)]


def _lines(groups: Sequence[tuple[str, np.ndarray]], per_line: int) -> list[tuple[str, np.ndarray]]:
    """Each group's indices cut into lines of at most ``per_line``; the group's name on its first line."""
    out = []
    for name, idx in groups:
        idx = np.asarray(idx)
        for start in range(0, len(idx), per_line):
            out.append((name if start == 0 else "", idx[start:start + per_line]))
    return out


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _show(ax, img: np.ndarray, rescaled: bool) -> None:
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if rescaled:
        for s in ax.spines.values():
            s.set_visible(True)
            s.set_color(_RESCALED)
            s.set_linewidth(2)


def image_grid(
    pixels: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    max_per_row: int = 20,
    title: str | None = None,
    rows: Sequence[tuple[str, np.ndarray]] | None = None,
    ipc: int | None = None,
) -> Path:
    """Draw every image of ``pixels: (m, h, w, c)`` as a PNG grid, grouped by class; written atomically.

    ``labels: (m, k)``. Images are grouped by the class they were initialised for
    (:func:`image_classes`, using ``ipc``); a class with more than ``max_per_row`` images wraps onto
    more lines. With at most 3 images per class the classes become columns instead (one line of
    classes, wrapped after ``max_per_row`` classes), so ipc 1 fills the width. ``rows``, when given,
    replaces the grouping by explicit ``(row title, indices)`` pairs (each wrapped the same way).
    Images outside [0, 1] are min-max rescaled and framed in red, and the figure says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3):
        raise InvalidInputError(f"images must be (m, h, w, 1 or 3) to draw, got {pixels.shape}")
    if len(pixels) == 0:
        raise InvalidInputError("there are no images to draw")
    if int(max_per_row) < 1:
        raise InvalidInputError(f"max_per_row must be >= 1, got {max_per_row}")
    per_line = int(max_per_row)
    pixels, rescaled = displayable(pixels)
    labels = np.asarray(labels)
    k = labels.shape[1]
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in range(k)]
    notes = []
    columns = False
    if rows is None:
        groups = [(names[c] if c < len(names) else str(c), idx)
                  for c, idx in enumerate(rows_by_class(labels, k, ipc=ipc)) if len(idx)]
        if labels_are_learned(labels) and k > 1:
            notes.append("grouped by the class each image was initialised for (its labels were learned)")
        columns = max(len(i) for _, i in groups) <= 3 and len(groups) > 1
    else:
        groups = [(t, np.asarray(i)) for t, i in rows if len(i)]
    if rescaled.any():
        notes.append(f"{int(rescaled.sum())} of {len(pixels)} images lie outside [0, 1] and are min-max rescaled "
                     "(red frame); the others are clipped")

    if columns:  # classes side by side, wrapped into bands of `per_line` classes; each band ipc lines deep
        depth = max(len(i) for _, i in groups)
        bands = [groups[s:s + per_line] for s in range(0, len(groups), per_line)]
        nrows, ncols = depth * len(bands), min(per_line, len(groups))
        label_w = 0.2
    else:
        lines = _lines(groups, per_line)
        nrows, ncols = len(lines), max(len(i) for _, i in lines)
        longest = max((len(n) for n, _ in lines), default=1)
        label_w = min(2.5, 0.25 + 0.08 * longest)
    cell = min(1.2, max(0.6, _WIDTH / ncols))  # inches per image: few images drawn larger
    header = 0.3 * ((1 if title else 0) + len(notes)) + (0.25 if columns else 0.1)
    width = max(label_w + cell * ncols + 0.1, 4.5)
    height = header + cell * nrows * (1.25 if columns else 1.0) + 0.1
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=label_w / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - header / height,
                        wspace=0.06, hspace=0.3 if columns else 0.06)
    for ax in axes.ravel():
        _blank(ax)
    if columns:
        for b, band in enumerate(bands):
            for c, (name, idx) in enumerate(band):
                for r, i in enumerate(idx):
                    _show(axes[b * depth + r][c], pixels[i], rescaled[i])
                axes[b * depth][c].set_title(name, fontsize=8)
    else:
        for r, (name, idx) in enumerate(lines):
            for c, i in enumerate(idx):
                _show(axes[r][c], pixels[i], rescaled[i])
            if name:
                axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    y = 1 - 0.12 / height
    if title:
        fig.text(0.5, y, title, ha="center", va="top", fontsize=10)
        y -= 0.3 / height
    for note in notes:
        fig.text(0.5, y, note, ha="center", va="top", fontsize=8,
                 color=_RESCALED if "rescaled" in note else "0.3")
        y -= 0.3 / height
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    plt.close(fig)
    return path


def label_heatmap(labels: np.ndarray, path: str | Path, *, class_names: Sequence[str] | None = None,
                  ipc: int | None = None, title: str | None = None) -> Path:
    """The label matrix as a heatmap: one column per image (grouped by the class it was initialised for,
    as in :func:`image_grid`), one row per class, a diverging colour scale centred at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(labels, dtype=np.float64)
    m, k = y.shape
    cls = image_classes(y, ipc)
    order = np.argsort(cls, kind="stable")
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in range(k)]
    lim = float(np.abs(y).max()) or 1.0
    width = min(max(5.0, 1.6 + 0.09 * m), 18.0)
    fig, ax = plt.subplots(figsize=(width, 1.2 + 0.28 * k))
    im = ax.imshow(y[order].T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(k))
    ax.set_yticklabels(names, fontsize=8)
    bounds = np.flatnonzero(np.diff(cls[order])) + 0.5
    for b in bounds:
        ax.axvline(b, color="0.2", linewidth=0.6)
    starts = np.concatenate([[0], np.ceil(bounds).astype(int)])
    ends = np.concatenate([np.ceil(bounds).astype(int), [m]])
    ax.set_xticks((starts + ends - 1) / 2)
    ax.set_xticklabels([names[c] if c < len(names) else str(c) for c in cls[order][starts]], fontsize=7,
                       rotation=90 if k > 12 else 0)
    ax.set_xlabel("images, grouped by the class they were initialised for")
    ax.set_ylabel("label entry (class)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    ax.set_title(title or "learned labels", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    plt.close(fig)
    return path
