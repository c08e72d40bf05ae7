"""Hostile input files and arrays: each gives one clear line naming the real cause, and nothing is
decoded or allocated before the cheap checks.

Every bad file is built here: forged ``.npy`` headers are written with numpy's own
``numpy.lib.format.write_array_header_1_0`` into a zip made with :mod:`zipfile`, so the
header can promise any shape while the member holds a few bytes. Each case is checked
through the library (the right :class:`~kdistill.errors.KDistillError` subclass, a one-line
message with the key words) and through the CLI (exit 2, one ``error:`` line on stderr, no
traceback, earlier files byte-identical).
"""

from __future__ import annotations

import io as _bytesio
import json
import os
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _helpers import error_line, run_cli
from kdistill import io
from kdistill.data import Dataset, load, load_arrays
from kdistill import _npz
from kdistill.errors import CorruptFileError, InvalidInputError, UnsafeFileError

NOT_NPZ = "not an .npz file (a zip archive of .npy arrays)"
HUGE = (31_000_000, 28, 28)  # 24 GB of uint8 declared by a header in a file of a few kilobytes


def _npy(array: np.ndarray) -> bytes:
    buf = _bytesio.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=True)
    return buf.getvalue()


def _forged_npy(shape: tuple[int, ...], dtype: str, data: bytes) -> bytes:
    """A .npy member whose header declares ``shape`` of ``dtype`` but whose data are ``data``."""
    buf = _bytesio.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + data


def _zip(path: Path, members: dict[str, bytes | np.ndarray], *, compress: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for key, value in members.items():
            zf.writestr(f"{key}.npy", value if isinstance(value, bytes) else _npy(value))
    return path


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------
# User datasets (.npz of x_train, y_train, x_test, y_test)
# ----------------------------------------------------------------------------


def _good(rng=None) -> dict[str, np.ndarray]:
    rng = rng or np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, size=(12, 4, 4), dtype=np.uint8),
        "y_train": np.arange(12) % 3,
        "x_test": rng.integers(0, 256, size=(6, 4, 4), dtype=np.uint8),
        "y_test": np.arange(6) % 3,
    }


def _dataset_file(tmp_path: Path, **change) -> Path:
    return _zip(tmp_path / "bad.npz", {**_good(), **change})


def _distill_refuses(tmp_path: Path, bad: Path) -> str:
    """`kdistill distill --dataset BAD` on top of an earlier run: one error line, the run untouched."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "summary.json").write_text('{"test_accuracy": 0.5}')
    (out / "distilled.npz").write_bytes(b"earlier result")
    before = _snapshot(out)
    r = run_cli("distill", "--dataset", bad, "--ipc", "1", "--kernel", "linear", "--no-full", "--no-baseline",
                "--out", out, "--force")
    line = error_line(r)
    assert _snapshot(out) == before
    return line


def test_good_dataset_file_loads(tmp_path):
    """The reference the bad cases differ from: the same builder with nothing changed loads."""
    ds = load_arrays(_dataset_file(tmp_path))
    assert ds.num_classes == 3 and ds.x_train.shape == (12, 4, 4, 1) and ds.x_test.shape == (6, 4, 4, 1)


def test_every_layout_numpy_writes_still_loads(tmp_path):
    """Compressed members, Fortran order, big-endian dtypes and bytes class names decode to the same values
    as numpy.load gives."""
    rng = np.random.default_rng(3)
    arrays = {"x_train": np.asfortranarray(rng.random((12, 4, 4, 2)).astype(">f8")),
              "y_train": (np.arange(12) % 3).astype(">i4"), "x_test": rng.integers(0, 256, (6, 4, 4, 2), np.uint8),
              "y_test": np.arange(6) % 3, "class_names": np.array([b"a", b"b", b"c"])}
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    ds = load_arrays(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as ref:
        np.testing.assert_array_equal(ds.x_train, ref["x_train"].astype(np.float32))
        np.testing.assert_array_equal(ds.y_train, ref["y_train"])
        np.testing.assert_array_equal(ds.x_test, ref["x_test"] / np.float32(255))
    assert ds.class_names == ("a", "b", "c")


def _refused_fast_and_small(loader, path):
    """``loader(path)`` raises CorruptFileError within 20 s and with under 50 MiB allocated (tracemalloc sees
    numpy's allocations); returns the exception info."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(CorruptFileError) as exc:
            loader(path)
        seconds = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 20 and peak < 50 << 20, (seconds, peak)  # a loaded machine: 20 s; reading the array: minutes
    return exc


def test_huge_header_is_refused_before_any_allocation(tmp_path):
    """A header declaring 31 million images in a tiny file: refused from the header, fast, and
    without numpy allocating the array (tracemalloc sees numpy's allocations)."""
    bad = _dataset_file(tmp_path, x_train=_forged_npy(HUGE, "u1", bytes(12 * 28 * 28)))
    assert bad.stat().st_size < 100_000
    exc = _refused_fast_and_small(load_arrays, bad)
    _one_line(exc, "bad.npz", "x_train", "(31000000, 28, 28)", "truncated or forged")
    t = time.perf_counter()
    assert "(31000000, 28, 28)" in _distill_refuses(tmp_path, bad)
    assert time.perf_counter() - t < 20  # from the header: well under a second on a quiet machine


def test_huge_header_in_compressed_file(tmp_path):
    """Same lie inside savez_compressed-style (deflated) members."""
    bad = _zip(tmp_path / "bad.npz", {**_good(), "y_train": _forged_npy((10**9,), "i8", bytes(8 * 12))},
               compress=True)
    with pytest.raises(CorruptFileError) as exc:
        load_arrays(bad)
    _one_line(exc, "y_train", "(1000000000,)", "truncated or forged")


@pytest.mark.parametrize("shape", [(-5, 4, 4), (12, 4.0, 4), "oops"])
def test_impossible_header_shapes(tmp_path, shape):
    buf = _bytesio.BytesIO()
    header = repr({"descr": "|u1", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    buf.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(12 * 16))
    bad = _dataset_file(tmp_path, x_train=buf.getvalue())
    with pytest.raises(CorruptFileError) as exc:
        load_arrays(bad)
    _one_line(exc, "x_train", "impossible shape")


def test_truncated_member_data(tmp_path):
    member = _npy(_good()["x_train"])
    bad = _dataset_file(tmp_path, x_train=member[:-50])
    with pytest.raises(CorruptFileError) as exc:
        load_arrays(bad)
    _one_line(exc, "x_train", "truncated or forged")


@pytest.mark.parametrize("compress", [False, True])
def test_forged_zip_directory_sizes(tmp_path, compress):
    """A member whose directory entry claims 3 GB (stored: more than its bytes; deflated: more than
    deflate can expand them to): refused from the zip directory alone."""
    good = _zip(tmp_path / "good.npz", _good(), compress=compress)
    data = bytearray(good.read_bytes())
    name_at = data.index(b"x_train.npy", data.index(b"PK\x01\x02"))
    entry = data.rindex(b"PK\x01\x02", 0, name_at)
    struct.pack_into("<I", data, entry + 24, 3_000_000_000)  # uncompressed size in the central directory
    bad = tmp_path / "forged.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError) as exc:
        load_arrays(bad)
    _one_line(exc, "forged.npz", "x_train", "forged zip directory")


def test_flipped_data_byte_fails_crc(tmp_path):
    """Data changed after writing (header intact): decoding stops at the zip CRC check."""
    good = _dataset_file(tmp_path)
    data = bytearray(good.read_bytes())
    member = _npy(_good()["x_test"])
    at = data.index(member) + len(member) - 3
    data[at] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError) as exc:
        load_arrays(bad)
    _one_line(exc, "x_test", "CRC")


def test_memory_check_uses_headers(tmp_path, monkeypatch):
    """A total above this machine's memory is refused before decoding (limit lowered for the test)."""
    monkeypatch.setattr(_npz, "memory_bytes", lambda: 1000)
    with pytest.raises(InvalidInputError) as exc:
        load_arrays(_dataset_file(tmp_path))
    _one_line(exc, "bad.npz", "memory", "1000 bytes")
    assert "memory" in _distill_refuses(tmp_path, tmp_path / "bad.npz")


def test_read_npz_matches_numpy_and_refuses_lies(tmp_path):
    arrays = {"a": np.arange(7.0), "b": np.array(["x", "yz"]), "__meta__": np.frombuffer(b"{}", np.uint8)}
    np.savez(tmp_path / "ok.npz", **arrays)
    got = _npz.read_npz(tmp_path / "ok.npz", hint="delete it")
    assert set(got) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(got[key], value)
        assert got[key].dtype == value.dtype
    _zip(tmp_path / "lie.npz", {"a": _forged_npy((10**12,), "<f8", bytes(56))})
    with pytest.raises(CorruptFileError) as exc:
        _npz.read_npz(tmp_path / "lie.npz", hint="delete it")
    _one_line(exc, "lie.npz", "'a'", "(1000000000000,)", "delete it")


def test_memory_limit_reads_the_machine():
    from kdistill._machine import memory_bytes

    limit = memory_bytes()
    expected = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert limit is not None and 0 < limit <= expected


@pytest.mark.parametrize("kind", ["device", "text", "empty", "npy"])
def test_not_an_npz(tmp_path, kind):
    if kind == "device":
        bad = Path(os.devnull)  # refused by its file type before any read (the tester used /dev/zero: endless)
    else:
        bad = tmp_path / "data.npz"
        if kind == "text":
            bad.write_text("x_train,y_train\n1,2\n")
        elif kind == "empty":
            bad.write_bytes(b"")
        else:
            np.save(tmp_path / "single.npy", np.zeros(3))
            bad.write_bytes((tmp_path / "single.npy").read_bytes())
    with pytest.raises(CorruptFileError) as exc:
        load(str(bad))
    msg = _one_line(exc, str(bad), NOT_NPZ)
    assert "pickle" not in msg and ("device" in msg) == (kind == "device")
    assert NOT_NPZ in _distill_refuses(tmp_path, bad)


def test_real_object_arrays_keep_the_pickle_message(tmp_path):
    names = np.array(["a", 1, None], dtype=object)
    bad = _dataset_file(tmp_path, class_names=names)
    with pytest.raises(UnsafeFileError) as exc:
        load_arrays(bad)
    _one_line(exc, "class_names", "pickle")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"x_train": np.ones((12, 4, 4), np.complex128)}, ["x_train has dtype complex128", "real numbers"]),
        ({"x_test": np.full((6, 4, 4), "a")}, ["x_test has dtype <U1"]),
        ({"x_train": np.ones((12, 4, 4), bool)}, ["x_train has dtype bool"]),
        ({"y_train": np.arange(12).astype("datetime64[D]")}, ["y_train has dtype datetime64[D]"]),
        ({"y_test": np.ones(6, np.complex64)}, ["y_test has dtype complex64"]),
        ({"x_train": np.zeros((12, 0, 4), np.uint8)}, ["x_train has shape (12, 0, 4)", "no pixels"]),
        ({"x_train": np.zeros((12, 4, 4, 1, 1), np.uint8)}, ["x_train has shape (12, 4, 4, 1, 1)"]),
        ({"y_test": np.arange(5) % 3}, ["x_test has 6 images but y_test has 5 labels"]),
        ({"x_test": np.zeros((0, 4, 4), np.uint8), "y_test": np.zeros(0, np.int64)}, ["x_test is empty"]),
        ({"y_train": np.full(12, 3)}, ["only one class (label 3) in y_train", "at least 2 classes"]),
        ({"y_train": np.r_[np.arange(11) % 3, 99]}, ["y_train has label 99", "other labels are 0..2"]),
        ({"y_train": np.array([0, 1, 3] * 4), "y_test": np.array([0, 1, 3] * 2)},
         ["y_train skips label 2", "every class present", "relabel"]),
        ({"class_names": np.array(["a", "b", "c", "d", "e"])}, ["class_names has 5 names but the labels have 3"]),
        ({"y_test": np.array([0, 1, 2, 7, 0, 1])}, ["y_test has label 7, which never occurs in y_train (labels 0..2)"]),
        ({"y_train": np.arange(12) % 3 + 0.5}, ["y_train holds non-integer"]),
        ({"y_train": np.full(12, 1e300)}, ["y_train holds label 1e+300"]),
    ],
)
def test_bad_dataset_arrays(tmp_path, change, words):
    bad = _dataset_file(tmp_path, **change)
    with pytest.raises(InvalidInputError) as exc:
        load_arrays(bad)
    msg = _one_line(exc, "bad.npz", *words)
    assert "--ipc" not in msg and "ipc" not in msg.split(";")[0]
    line = _distill_refuses(tmp_path, bad)
    for w in words:
        assert w in line


def test_dataset_constructor_validates():
    """The public Dataset type keeps its contract whoever builds it."""
    rng = np.random.default_rng(0)
    good = dict(name="mine", x_train=rng.random((6, 2, 2, 1), dtype=np.float32), y_train=np.arange(6) % 2,
                x_test=rng.random((3, 2, 2, 1), dtype=np.float32), y_test=np.arange(3) % 2, class_names=("a", "b"),
                source="test")
    Dataset(**good)
    x_test = good["x_test"].copy()
    x_test[1, 0, 0, 0] = np.inf
    cases = [
        ({"x_test": x_test}, "x_test contains 1 NaN or infinite"),
        ({"x_train": np.full((6, 2, 2, 1), np.nan, np.float32)}, "x_train contains 24 NaN"),
        ({"y_train": np.ones(6, np.int64)}, "only one class (label 1, 'b') in y_train"),
        ({"y_train": np.arange(6) % 3}, "y_train holds label 2 but there are 2 classes"),
        ({"x_test": np.zeros((3, 2, 3, 1), np.float32)}, "train images are (2, 2, 1) but test images are (2, 3, 1)"),
        ({"x_train": np.zeros((6, 2, 2, 1), np.complex64)}, "x_train must be an (n, h, w, c) float array"),
        ({"y_test": np.arange(2)}, "x_test has 3 images but y_test has 2 labels"),
        ({"class_names": ("a",)}, "y_train holds label 1 but there are 1 classes"),
        ({"class_names": ("a",), "y_train": np.zeros(6, np.int64), "y_test": np.zeros(3, np.int64)},
         "only one class (label 0, 'a')"),
    ]
    for change, words in cases:
        with pytest.raises(InvalidInputError) as exc:
            Dataset(**{**good, **change})
        _one_line(exc, "Dataset 'mine'", words)


def test_distill_api_refuses_one_class():
    import kdistill

    with pytest.raises(InvalidInputError) as exc:
        kdistill.distill(np.random.default_rng(0).random((10, 3)), np.full(10, "cat"), kernel="linear")
    _one_line(exc, "only one class", "'cat'")


def test_distill_api_refuses_train_and_test_images_on_different_scales():
    """Integer digits (0..16) for training and the same digits as floats (0..1) for testing ran silently to
    14.7%: the test set goes through the training set's standardisation."""
    import kdistill
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    with pytest.raises(InvalidInputError) as exc:
        kdistill.distill(x[:1000], y[:1000], kernel="linear", ipc=1, x_test=x[1000:] / 16.0, y_test=y[1000:])
    _one_line(exc, "x spans [0, 16]", "x_test spans [0, 1]", "scale both the same way")
    s = kdistill.distill(x[:1000] / 16.0, y[:1000], kernel="linear", ipc=1, x_test=x[1000:] / 16.0, y_test=y[1000:])
    assert s.summary["test_accuracy"] > 0.5  # the same data on one scale is fine


@pytest.mark.parametrize("call, words", [
    (lambda: load("cifar10", data_dir=123), ("data_dir must be a folder path", "int 123")),
    (lambda: load("digits", data_dir=b"/tmp"), ("data_dir must be a folder path", "bytes")),
    (lambda: _methods().run(None, _methods().RunConfig(method="random", ipc=1)),
     ("dataset must be a kdistill.data.Dataset", "NoneType")),
    (lambda: _methods().run(load("digits"), {"method": "random"}), ("config must be a kdistill.methods.RunConfig",
                                                                   "dict")),
    (lambda: _methods().run_to_dir(None, load("digits"), _methods().RunConfig(method="random", ipc=1)),
     ("out must be a folder path", "NoneType")),
    (lambda: _methods().run_to_dir("never-written", "digits", _methods().RunConfig(method="random", ipc=1)),
     ("dataset must be a kdistill.data.Dataset", "kdistill.data.load('digits')")),
])
def test_api_arguments_of_the_wrong_type_are_kdistill_errors(call, words):
    """Raw TypeError / AttributeError before; now one line that names the argument and what it takes."""
    with pytest.raises(InvalidInputError) as exc:
        call()
    _one_line(exc, *words)
    assert not Path("never-written").exists()


def _methods():
    """The names the run API lives under: ``RunConfig`` from methods, ``run`` / ``run_to_dir`` from runs."""
    import types

    import kdistill.methods
    import kdistill.runs

    return types.SimpleNamespace(RunConfig=kdistill.methods.RunConfig, run=kdistill.runs.run,
                                 run_to_dir=kdistill.runs.run_to_dir)


# ----------------------------------------------------------------------------
# Distilled-set files (.npz of images, labels [, prep_*] + .json sidecar)
# ----------------------------------------------------------------------------


def _set_members(m: int = 6, k: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"images": rng.normal(size=(m, 4, 4, 1)).astype(np.float32),
            "labels": (np.eye(k)[np.arange(m) % k] - 1 / k).astype(np.float32),
            "prep_kind": np.array("standardize"), "prep_channel_mean": np.zeros(1, np.float32),
            "prep_channel_std": np.ones(1, np.float32)}


def _set_file(tmp_path: Path, sidecar: str | None = None, **change) -> Path:
    folder = tmp_path / "set"
    folder.mkdir(exist_ok=True)
    path = _zip(folder / "bad.npz", {**_set_members(), **change})
    if sidecar is not None:
        (folder / "bad.json").write_text(sidecar)
    return path


def _cli_refuses(path: Path, tmp_path: Path) -> list[str]:
    """evaluate, show and `distill --method label-solve --support` each refuse with one line and
    leave every file beside the set (and the would-be outputs) as they were."""
    before = _snapshot(path.parent)
    lines = [error_line(run_cli("evaluate", path, "--dataset", "digits", "--kernel", "linear")),
             error_line(run_cli("show", path, "--out", tmp_path / "grid.png"))]
    assert _snapshot(path.parent) == before
    assert not (tmp_path / "grid.png").exists()
    return lines


def test_good_set_file_loads(tmp_path):
    ds = io.load(_set_file(tmp_path, sidecar=json.dumps({"kernel": "linear", "class_names": ["a", "b", "c"]})))
    assert ds.images.shape == (6, 4, 4, 1) and ds.meta["class_names"] == ["a", "b", "c"]


def test_set_huge_header(tmp_path):
    bad = _set_file(tmp_path, images=_forged_npy((31_000_000, 32, 32, 3), "<f4", bytes(4 * 6 * 16)))
    exc = _refused_fast_and_small(io.load, bad)
    _one_line(exc, "bad.npz", "'images'", "(31000000, 32, 32, 3)", "truncated or forged")
    for line in _cli_refuses(bad, tmp_path):
        assert "truncated or forged" in line


@pytest.mark.parametrize("kind", ["device", "text"])
def test_set_not_an_npz(tmp_path, kind):
    if kind == "device":
        bad = Path(os.devnull)  # refused by its file type before any read (the tester used /dev/zero: endless)
    else:
        bad = tmp_path / "set" / "bad.npz"
        bad.parent.mkdir()
        bad.write_text("images,labels\n")
    with pytest.raises(CorruptFileError) as exc:
        io.load(bad)
    msg = _one_line(exc, NOT_NPZ)
    assert "pickle" not in msg and ("device" in msg) == (kind == "device")
    if kind == "text":
        for line in _cli_refuses(bad, tmp_path):
            assert NOT_NPZ in line
    else:
        assert NOT_NPZ in error_line(run_cli("evaluate", bad, "--dataset", "digits", "--kernel", "linear"))


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"images": np.ones((6, 4, 4, 1), np.complex128)}, InvalidInputError, ["images have dtype complex128"]),
        ({"images": np.full((6, 4, 4, 1), "x")}, InvalidInputError, ["images have dtype <U1"]),
        ({"labels": np.zeros((6, 3), "datetime64[s]")}, InvalidInputError, ["labels have dtype datetime64[s]"]),
        ({"labels": np.ones((6, 3), bool)}, InvalidInputError, ["labels have dtype bool"]),
        ({"images": np.zeros((0, 4, 4, 1), np.float32), "labels": np.zeros((0, 3), np.float32)}, InvalidInputError,
         ["holds no images"]),
        ({"images": np.zeros((6, 0, 4, 1), np.float32)}, InvalidInputError, ["hold no pixels"]),
        ({"labels": np.zeros((6, 0), np.float32)}, InvalidInputError, ["no class columns"]),
        ({"labels": np.zeros(6, np.float32)}, InvalidInputError, ["labels are 1-D"]),
        ({"labels": np.zeros((5, 3), np.float32)}, InvalidInputError, ["6 images but 5 label rows"]),
        ({"images": np.full((6, 4, 4, 1), np.nan, np.float32)}, InvalidInputError, ["images contain NaN or inf"]),
        ({"labels": np.full((6, 3), np.inf, np.float32)}, InvalidInputError, ["labels contain NaN or inf"]),
        ({"images": np.full((6, 4, 4, 1), 1e300)}, InvalidInputError, ["beyond the float32 range"]),
        ({"images": np.array([{"a": 1}] * 6, dtype=object)}, UnsafeFileError, ["'images'", "pickle"]),
        ({"prep_channel_mean": np.zeros(3, np.float32)}, CorruptFileError, ["prep_channel_mean", "(3,)", "(1,)"]),
        ({"prep_channel_std": np.zeros(1, np.float32)}, CorruptFileError, ["prep_channel_std", "<= 0"]),
        ({"prep_kind": np.array(["zca", "none"])}, CorruptFileError, ["prep_kind"]),
        ({"prep_kind": np.array("sharpen")}, CorruptFileError, ["'sharpen' is unknown"]),
        ({"prep_channel_mean": np.ones(1, np.complex64)}, CorruptFileError, ["prep_channel_mean", "complex64"]),
    ],
)
def test_bad_set_arrays(tmp_path, change, error, words):
    bad = _set_file(tmp_path, **change)
    with pytest.raises(error) as exc:
        io.load(bad)
    _one_line(exc, "bad.npz", *words)
    for line in _cli_refuses(bad, tmp_path):
        for w in words:
            assert w in line


def test_support_file_with_no_images(tmp_path):
    """`distill --method label-solve --support EMPTY.npz`: refused while loading the support file."""
    bad = _set_file(tmp_path, images=np.zeros((0, 8, 8, 1), np.float32), labels=np.zeros((0, 10), np.float32))
    out = tmp_path / "out"
    r = run_cli("distill", "--dataset", "digits", "--method", "label-solve", "--support", bad, "--ipc", "1",
                "--kernel", "linear", "--no-full", "--no-baseline", "--out", out)
    assert "holds no images" in error_line(r)
    assert not (out / "summary.json").exists()


def test_save_refuses_object_arrays(tmp_path):
    """np.savez would pickle them, making a file io.load refuses: refuse when saving instead."""
    ds = io.DistilledSet(images=np.zeros((2, 2, 2, 1)), labels=np.eye(2), arrays={"note": np.array([{}], object)})
    with pytest.raises(InvalidInputError) as exc:
        io.save(tmp_path / "d.npz", ds)
    _one_line(exc, "note", "Python objects")
    assert not (tmp_path / "d.npz").exists()


def test_distilled_set_constructor_refuses_bad_arrays():
    cases = [
        (np.zeros((0, 2, 2, 1)), np.zeros((0, 2)), "holds no images"),
        (np.ones((2, 2, 2, 1), np.complex64), np.zeros((2, 2)), "images have dtype complex64"),
        (np.ones((2, 2, 2, 1)), np.zeros((2, 2), "U1"), "labels have dtype <U1"),
        (np.full((2, 2, 2, 1), 1e300), np.zeros((2, 2)), "beyond the float32 range"),
    ]
    for images, labels, words in cases:
        with pytest.raises(InvalidInputError) as exc:
            io.DistilledSet(images=images, labels=labels)
        _one_line(exc, words)


@pytest.mark.parametrize(
    ("sidecar", "words"),
    [
        ("[1, 2]", ["is a JSON list"]),
        ('"just a string"', ["is a JSON str"]),
        ('{"class_names": 5}', ["'class_names'", "list of 3 strings"]),
        ('{"class_names": ["a", "b"]}', ["'class_names'", "list of 3 strings"]),
        ('{"class_names": [1, 2, 3]}', ["'class_names'"]),
        ('{"preprocess": "x"}', ["'preprocess'"]),
        ('{"preprocess": {"kind": 3}}', ["'preprocess'"]),
        ('{"kernel": 3}', ["'kernel'", "a string"]),
        ('{"dataset": ["digits"]}', ["'dataset'", "a string"]),
        ('{"reg": "small"}', ["'reg'", "finite number"]),
        ('{"reg": NaN}', ["'reg'", "finite number"]),
        ('{"lam": -1}', ["'lam'"]),
        ('{"ipc": "2"}', ["'ipc'", "integer"]),
        ('{"seed": 1.5}', ["'seed'", "integer"]),
        ('{"num_classes": 7}', ["'num_classes'"]),
        ('{"classes": [[1], 2, 3]}', ["'classes'"]),
        ('{"image_shape": [9, 9, 9]}', ["'image_shape'", "[4, 4, 1]"]),
        ('{"input_shape": [0, 16]}', ["'input_shape'"]),
        ('{"seconds": {"distill": "long"}}', ["'seconds'"]),
        ("{not json", ["not valid JSON"]),
        ("[" * 100_000 + "]" * 100_000, ["not valid JSON"]),
    ],
)
def test_bad_sidecar(tmp_path, sidecar, words):
    bad = _set_file(tmp_path, sidecar=sidecar)
    with pytest.raises(CorruptFileError) as exc:
        io.load(bad)
    _one_line(exc, "bad.json", "sidecar", "fix or delete it", *words)
    for line in _cli_refuses(bad, tmp_path):
        assert "bad.json" in line and "fix or delete it" in line


def test_sidecar_that_is_a_device(tmp_path):
    bad = _set_file(tmp_path)
    (bad.parent / "bad.json").symlink_to(os.devnull)
    with pytest.raises(CorruptFileError) as exc:
        io.load(bad)
    _one_line(exc, "bad.json", "not a regular file")


def test_set_memory_check(tmp_path, monkeypatch):
    monkeypatch.setattr(_npz, "memory_bytes", lambda: 500)
    with pytest.raises(InvalidInputError) as exc:
        io.load(_set_file(tmp_path))
    _one_line(exc, "bad.npz", "memory", "500 bytes")
