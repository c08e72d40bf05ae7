"""Helpers shared by the benchmark scripts: timing, result files, machine description."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

RESULTS = Path(__file__).resolve().parent / "results"


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t


def markdown_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md`` atomically."""
    from kdistill._atomic import write_bytes, write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    write_json(js, payload)
    write_bytes(md, (markdown + "\n").encode())
    return js, md


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def matmul_seconds(m: int, k: int, n: int, dtype, repeats: int = 5) -> float:
    """Best seconds of a NumPy ``(m, k) @ (k, n)`` product in ``dtype`` (after one warm-up): this machine's
    reference for ratios measured in the same run."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return best
