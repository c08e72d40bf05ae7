"""Distilled-set files: round trip, KIP-format files, corrupt files, atomic writes."""

import json
import os

import numpy as np
import pytest

from kdistill import io
from kdistill._atomic import atomic_path
from kdistill.errors import CorruptFileError, InvalidInputError


def _set(rng, m=6, k=3):
    return io.DistilledSet(
        images=rng.normal(size=(m, 4, 4, 1)).astype(np.float32),
        labels=(np.eye(k)[np.arange(m) % k] - 1 / k).astype(np.float32),
        meta={"dataset": "digits", "method": "random", "kernel": "linear", "ipc": 2, "seed": 0},
        arrays={"prep_kind": np.array("standardize"), "prep_channel_mean": np.zeros(1, np.float32),
                "prep_channel_std": np.ones(1, np.float32)},
    )


def test_round_trip(tmp_path, rng):
    ds = _set(rng)
    io.save(tmp_path / "d.npz", ds)
    back = io.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.meta == ds.meta
    assert set(back.arrays) == {"prep_kind", "prep_channel_mean", "prep_channel_std"}
    assert json.loads((tmp_path / "d.json").read_text())["method"] == "random"


def test_kip_released_format_loads(tmp_path, rng):
    """KIP's released sets are npz files with just images and labels (no sidecar)."""
    np.savez(tmp_path / "kip.npz", images=rng.normal(size=(10, 32, 32, 3)).astype(np.float32),
             labels=np.eye(10, dtype=np.float32))
    ds = io.load(tmp_path / "kip.npz")
    assert ds.images.shape == (10, 32, 32, 3) and ds.labels.shape == (10, 10) and ds.meta == {}


def test_truncated_file_is_reported(tmp_path, rng):
    io.save(tmp_path / "d.npz", _set(rng))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="t.npz"):
        io.load(tmp_path / "t.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(CorruptFileError, match="junk.npz"):
        io.load(tmp_path / "junk.npz")


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    arr = np.empty(1, dtype=object)
    arr[0] = Boom()
    np.savez(tmp_path / "evil.npz", images=arr, labels=np.eye(2))
    with pytest.raises(CorruptFileError, match="pickle"):
        io.load(tmp_path / "evil.npz")
    assert not (tmp_path / "pwned").exists()


def test_shape_and_nan_errors(tmp_path, rng):
    with pytest.raises(InvalidInputError, match="label rows"):
        io.DistilledSet(images=np.zeros((3, 2, 2, 1)), labels=np.zeros((2, 2)))
    bad = np.zeros((2, 2, 2, 1))
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        io.DistilledSet(images=bad, labels=np.zeros((2, 2)))
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 2, 2, 1)))
    with pytest.raises(CorruptFileError, match="missing"):
        io.load(tmp_path / "nolabels.npz")


def test_failed_write_leaves_previous_file_intact(tmp_path, rng):
    ds = _set(rng)
    io.save(tmp_path / "d.npz", ds)
    before = (tmp_path / "d.npz").read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "d.npz") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert (tmp_path / "d.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
