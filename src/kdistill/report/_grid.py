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
_CELL = (0.6, 1.2)  # inches per image, least and most: few images are drawn larger
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


def _cell_size(h: int, w: int, target: float, largest: float) -> tuple[int, int]:
    """Screen pixels of one ``(h, w)`` image drawn about ``target`` (at most ``largest``) pixels across: the
    nearest integer multiple of the image when it is enlarged (every image pixel an equal square), ``target``
    when it must shrink."""
    n = max(h, w)
    if n <= target:
        s = max(1, round(target / n))
        if s > 1 and s * n > largest:
            s -= 1
        return h * s, w * s
    f = target / n
    return max(1, round(h * f)), max(1, round(w * f))


def _resize(images: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """``images: (m, h, w, c)`` to ``(m, ch, cw, c)`` by nearest neighbour (exact repetition when enlarging
    by an integer factor)."""
    _, h, w, _ = images.shape
    rows = np.minimum((np.arange(ch) + 0.5) * h / ch, h - 1).astype(np.intp)
    cols = np.minimum((np.arange(cw) + 0.5) * w / cw, w - 1).astype(np.intp)
    return images[:, rows][:, :, cols]


def _pasted(rgba: np.ndarray, x: int, y: int):
    """An artist that copies ``rgba: (h, w, 4) uint8`` (first row on top) onto the canvas pixel for pixel,
    its lower-left corner ``(x, y)`` pixels from the figure's lower-left corner (``figimage`` would resample
    it, which costs more than drawing everything else)."""
    from matplotlib.artist import Artist

    rows_up = np.ascontiguousarray(rgba[::-1])  # the renderer's rows run bottom to top

    class Pasted(Artist):
        def draw(self, renderer) -> None:
            if self.get_visible():
                gc = renderer.new_gc()
                renderer.draw_image(gc, x, y, rows_up)
                gc.restore()

    return Pasted()


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

    The images are pasted into one mosaic, each enlarged by a whole number of screen pixels per image
    pixel (about 0.6 to 1.2 inches at 80 dpi per image), which the figure shows pixel for pixel: the cost
    grows with the figure's area, not with one matplotlib artist per image.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

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
        if not groups:
            raise InvalidInputError("every row is empty: there are no images to draw")
    if rescaled.any():
        notes.append(f"{int(rescaled.sum())} of {len(pixels)} images lie outside [0, 1] and are min-max rescaled "
                     "(red frame); the others are clipped")

    # where each image goes: (image index, line, column); titles at the left of lines or above columns
    cells: list[tuple[int, int, int]] = []
    row_titles: list[tuple[int, str]] = []  # (line, title) at the left of the line's first cell
    col_titles: list[tuple[int, int, str]] = []  # (line, column, title) above the cell
    if columns:  # classes side by side, wrapped into bands of `per_line` classes; each band ipc lines deep
        depth = max(len(i) for _, i in groups)
        bands = [groups[s:s + per_line] for s in range(0, len(groups), per_line)]
        nrows, ncols = depth * len(bands), min(per_line, len(groups))
        for b, band in enumerate(bands):
            for c, (name, idx) in enumerate(band):
                cells += [(int(i), b * depth + r, c) for r, i in enumerate(idx)]
                col_titles.append((b * depth, c, name))
        label_w = 0.2
    else:
        lines = _lines(groups, per_line)
        nrows, ncols = len(lines), max(len(i) for _, i in lines)
        for r, (name, idx) in enumerate(lines):
            cells += [(int(i), r, c) for c, i in enumerate(idx)]
            if name:
                row_titles.append((r, name))
        longest = max((len(n) for n, _ in lines), default=1)
        label_w = min(2.5, 0.25 + 0.08 * longest)

    # sizes in screen pixels at _DPI: image cells, the gaps between them, the room for column titles
    _, h, w, _ = pixels.shape
    cell = min(_CELL[1], max(_CELL[0], _WIDTH / ncols))
    ch, cw = _cell_size(h, w, cell * _DPI, _CELL[1] * _DPI)
    frame = 2  # red frame of a rescaled image, drawn in the gap around it
    gap = max(2 * frame + 1, round(0.06 * cw))
    title_gap = round(0.25 * _DPI) if columns else 0  # above each band but the first (header holds that one)
    ys = np.arange(nrows) * (ch + gap) + frame
    if columns:
        ys += (np.arange(nrows) // depth) * title_gap
    xs = np.arange(ncols) * (cw + gap) + frame
    mosaic_h = int(ys[-1]) + ch + frame
    mosaic_w = int(xs[-1]) + cw + frame

    # the mosaic: opaque white, red where a frame goes, then every image (grey as RGB)
    mosaic = np.full((mosaic_h, mosaic_w, 4), 255, dtype=np.uint8)
    red = np.array([round(255 * v) for v in to_rgb(_RESCALED)], dtype=np.uint8)
    order = np.array([i for i, _, _ in cells])
    big = _resize(np.rint(pixels[order] * 255).astype(np.uint8), ch, cw)
    if big.shape[-1] == 1:
        big = np.repeat(big, 3, axis=-1)
    for n, (i, r, c) in enumerate(cells):
        y0, x0 = int(ys[r]), int(xs[c])
        if rescaled[i]:
            mosaic[y0 - frame:y0 + ch + frame, x0 - frame:x0 + cw + frame, :3] = red
        mosaic[y0:y0 + ch, x0:x0 + cw, :3] = big[n]

    header = 0.3 * ((1 if title else 0) + len(notes)) + (0.25 if columns else 0.1)
    label_px = round(label_w * _DPI)
    margin = round(0.1 * _DPI)
    head_px = round(header * _DPI)
    # wide enough for the title and notes (about 0.6 em a character), and at least 4.5 inches
    text_in = max([0.6 * 10 / 72 * len(title or "")] + [0.6 * 8 / 72 * len(n) for n in notes]) + 0.2
    width_px = max(label_px + mosaic_w + margin, round(max(4.5, text_in) * _DPI))
    height_px = head_px + mosaic_h + margin
    x_left = label_px + (width_px - margin - label_px - mosaic_w) // 2  # centred right of the row titles
    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI)
    fig.add_artist(_pasted(mosaic, x_left, margin))

    def fx(px: float) -> float:
        return px / width_px

    def fy(px_from_top: float) -> float:
        return 1 - px_from_top / height_px

    for r, name in row_titles:
        fig.text(fx(x_left - 4), fy(head_px + ys[r] + ch / 2), name, ha="right", va="center", fontsize=9)
    for r, c, name in col_titles:
        fig.text(fx(x_left + xs[c] + cw / 2), fy(head_px + ys[r] - frame - 3), name, ha="center", va="bottom",
                 fontsize=8)
    y = 0.12 * _DPI
    if title:
        fig.text(0.5, fy(y), title, ha="center", va="top", fontsize=10)
        y += 0.3 * _DPI
    for note in notes:
        fig.text(0.5, fy(y), note, ha="center", va="top", fontsize=8,
                 color=_RESCALED if "rescaled" in note else "0.3")
        y += 0.3 * _DPI
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
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
