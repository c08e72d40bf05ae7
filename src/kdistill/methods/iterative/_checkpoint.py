"""Checkpoints of iterative methods: one npz, written atomically, with a checksum.

Arrays are stored under their names; a JSON ``meta`` document (step, history,
settings fingerprint, and a checksum over all of it and every array) is stored as a byte array in the
same file, so the checkpoint is one atomic rename. Loading verifies the checksum
and refuses anything truncated, corrupt or written by different settings.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..._atomic import atomic_path
from ..._npz import read_npz
from ...errors import CorruptFileError, InvalidInputError

__all__ = ["save_checkpoint", "load_checkpoint"]


def _digest(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """sha256 over the metadata (canonical JSON, without the checksum) and every array."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write ``arrays`` and JSON-able ``meta`` to ``path`` atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))  # what will be read back
    doc = dict(meta, checksum=_digest(arrays, meta))
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8), **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _comparable(fingerprint: Any) -> Any:
    """A fingerprint without the driver's ``time_limit``: it changes where a run stops, never what a step
    computes, and a resumed run gets the time of its own process (checkpoints of kdistill 0.1 recorded it)."""
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("driver"), dict):
        driver = {k: v for k, v in fingerprint["driver"].items() if k != "time_limit"}
        return dict(fingerprint, driver=driver)
    return fingerprint


def load_checkpoint(path: str | Path, *, fingerprint: Mapping[str, Any] | None = None,
                    aliases: Sequence[Mapping[str, Any]] = ()):
    """Read a checkpoint; returns ``(arrays, meta)``.

    ``aliases``: older forms of ``fingerprint`` that mean the same settings (checkpoints of an earlier
    kdistill, which recorded fewer keys); a checkpoint carrying one of them is accepted.

    Raises :class:`CorruptFileError` for a truncated/corrupt file or checksum mismatch, and
    :class:`InvalidInputError` when ``fingerprint`` differs from the one it was written with.
    """
    path = Path(path)
    hint = "delete it to start again, or resume from another run"
    if not path.exists():
        raise InvalidInputError(f"nothing to resume: no checkpoint at {path}")
    arrays = read_npz(path, hint=hint)  # headers checked before any array is decoded
    raw = arrays.pop("__meta__", None)
    if raw is None:
        raise CorruptFileError(f"checkpoint {path} has no metadata; {hint}")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"checkpoint {path} has unreadable metadata ({e}); {hint}") from None
    if not isinstance(meta, dict) or meta.get("checksum") != _digest(arrays, meta):
        raise CorruptFileError(f"checkpoint {path} fails its checksum (contents changed or damaged); {hint}")
    accepted = [_comparable(json.loads(json.dumps(f))) for f in (fingerprint, *aliases)]
    if fingerprint is not None and _comparable(meta.get("fingerprint")) not in accepted:
        raise InvalidInputError(
            f"checkpoint {path} was written by a run with different settings ({meta.get('fingerprint')}); "
            "resume with the same settings or use another output directory"
        )
    return arrays, meta
