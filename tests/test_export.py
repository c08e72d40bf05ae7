"""``kdistill export``: a distilled set as plain arrays that ``np.load`` reads without kdistill or pickle.

The reference is :meth:`kdistill.io.DistilledSet.pixels` (the one Python path back to pixel space) and the
stored arrays themselves; every file is read back with ``np.load(..., allow_pickle=False)``.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from _helpers import error_line, run_cli
from kdistill import io

NAMES = ("images", "labels", "label_rows", "class_names")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A random ipc-1 set of digits, standardized (so pixel and preprocessed space differ): 10 images 8x8x1."""
    out = tmp_path_factory.mktemp("run") / "r"
    r = run_cli("distill", "--dataset", "digits", "--method", "random", "--ipc", "1", "--no-full", "--no-baseline",
                "--out", out)
    assert r.exit_code == 0, r.output
    return out / "distilled.npz"


def _read_npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _read_folder(path):
    assert sorted(p.name for p in path.iterdir()) == sorted(f"{n}.npy" for n in NAMES)
    return {n: np.load(path / f"{n}.npy", allow_pickle=False) for n in NAMES}


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_npz_holds_the_pixels_the_labels_and_the_class_names(run_file, tmp_path, layout):
    ds = io.load(run_file)
    r = run_cli("export", run_file, "--out", tmp_path / "e.npz", "--layout", layout)
    assert r.exit_code == 0, r.output
    got = _read_npz(tmp_path / "e.npz")
    assert sorted(got) == sorted(NAMES)
    want = ds.pixels() if layout == "nhwc" else ds.pixels().transpose(0, 3, 1, 2)
    assert got["images"].dtype == np.float32 and got["images"].shape == want.shape
    np.testing.assert_array_equal(got["images"], want)
    assert got["images"].shape == ((10, 8, 8, 1) if layout == "nhwc" else (10, 1, 8, 8))
    assert got["labels"].dtype == np.int64
    np.testing.assert_array_equal(got["labels"], np.argmax(ds.labels, axis=1))
    np.testing.assert_array_equal(got["label_rows"], ds.labels)
    assert got["label_rows"].dtype == ds.labels.dtype
    assert got["class_names"].dtype.kind == "U" and list(got["class_names"]) == ds.meta["class_names"]
    # digits are classes 0..9 and random picks real images: labels index class_names, pixels are [0, 1] pixels
    assert list(got["class_names"][got["labels"]]) == [str(c) for c in ds.class_labels()]
    assert 0 <= got["images"].min() and got["images"].max() <= 1 + 1e-6
    out = r.stdout.splitlines()
    assert len(out) == 2 and str(tmp_path / "e.npz") in out[0]
    assert f"images {want.shape} float32 {layout} in pixel space" in out[1] and "values" in out[1]


def test_npy_folder_reads_without_kdistill(run_file, tmp_path):
    ds = io.load(run_file)
    folder = tmp_path / "exp"
    r = run_cli("export", run_file, "--out", folder, "--format", "npy", "--layout", "nchw")
    assert r.exit_code == 0, r.output
    got = _read_folder(folder)
    np.testing.assert_array_equal(got["images"], ds.pixels().transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got["labels"], np.argmax(ds.labels, axis=1))
    np.testing.assert_array_equal(got["label_rows"], ds.labels)
    assert _entries(tmp_path) == ["exp"]  # no staging folder left beside it
    # a fresh interpreter with numpy alone (kdistill never imported) reads both formats
    assert run_cli("export", run_file, "--out", tmp_path / "e.npz").exit_code == 0
    code = ("import sys, numpy as np; z = np.load(sys.argv[1], allow_pickle=False); "
            "f = {n: np.load(sys.argv[2] + '/' + n + '.npy', allow_pickle=False) for n in %r}; "
            "assert all((z[n] == f[n]).all() for n in ('labels', 'label_rows', 'class_names')); "
            "assert (z['images'] == f['images'].transpose(0, 2, 3, 1)).all(); "
            "assert 'kdistill' not in sys.modules; print(z['images'].shape, f['class_names'][0])" % (NAMES,))
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "e.npz"), str(folder)], capture_output=True,
                       text=True)
    assert p.returncode == 0 and p.stdout.strip() == "(10, 8, 8, 1) 0", p.stderr


def test_no_pixels_gives_the_stored_images_and_soft_labels_stay_as_they_are(run_file, tmp_path):
    ds = io.load(run_file)
    soft = np.random.default_rng(0).normal(size=ds.labels.shape).astype(np.float32)  # learned labels, say
    io.save(tmp_path / "soft.npz", io.DistilledSet(ds.images, soft, dict(ds.meta), dict(ds.arrays)))
    r = run_cli("export", tmp_path / "soft.npz", "--out", tmp_path / "e.npz", "--no-pixels")
    assert r.exit_code == 0, r.output
    got = _read_npz(tmp_path / "e.npz")
    np.testing.assert_array_equal(got["images"], ds.images)
    assert not np.allclose(got["images"], ds.pixels())  # standardized: not the pixels
    np.testing.assert_array_equal(got["label_rows"], soft)
    np.testing.assert_array_equal(got["labels"], np.argmax(soft, axis=1))
    assert "preprocessed space (standardize)" in r.stdout


def test_a_flat_set_is_written_as_rows_and_refuses_nchw(tmp_path):
    import kdistill

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) + np.repeat([[0.0], [3.0]], 20, axis=0)
    s = kdistill.distill(x, np.repeat(["a", "b"], 20), method="random", kernel="linear", ipc=2, reg=0.1)
    s.save(tmp_path / "flat.npz")
    r = run_cli("export", tmp_path / "flat.npz", "--out", tmp_path / "e.npz")
    assert r.exit_code == 0, r.output
    got = _read_npz(tmp_path / "e.npz")
    assert got["images"].shape == (4, 5)
    np.testing.assert_allclose(got["images"], s.pixels(), rtol=1e-6)  # float32 of the float64 rows
    assert list(got["class_names"]) == ["a", "b"] and "(4, 5) float32 flat" in r.stdout
    line = error_line(run_cli("export", tmp_path / "flat.npz", "--out", tmp_path / "f.npz", "--layout", "nchw"))
    assert "flat rows" in line and "--layout nchw does not apply" in line
    assert not (tmp_path / "f.npz").exists()


def test_an_existing_output_is_replaced_only_with_force_and_never_the_input(run_file, tmp_path):
    out = tmp_path / "e.npz"
    out.write_bytes(b"earlier")
    assert "--force" in error_line(run_cli("export", run_file, "--out", out))
    assert out.read_bytes() == b"earlier"
    assert run_cli("export", run_file, "--out", out, "--force").exit_code == 0
    assert sorted(_read_npz(out)) == sorted(NAMES)
    assert "is the input" in error_line(run_cli("export", run_file, "--out", run_file, "--force"))
    folder = tmp_path / "exp"
    assert run_cli("export", run_file, "--out", folder, "--format", "npy").exit_code == 0
    assert "--force" in error_line(run_cli("export", run_file, "--out", folder, "--format", "npy"))
    assert run_cli("export", run_file, "--out", folder, "--format", "npy", "--no-pixels", "--force").exit_code == 0
    np.testing.assert_array_equal(_read_folder(folder)["images"], io.load(run_file).images)
    # a folder holding anything else (here the run folder itself) is never replaced, even with --force
    line = error_line(run_cli("export", run_file, "--out", run_file.parent, "--format", "npy", "--force"))
    assert "holds files an export does not write" in line and (run_file.parent / "summary.json").exists()
    assert _entries(tmp_path) == ["e.npz", "exp"]


def test_a_failed_write_leaves_no_half_export(run_file, tmp_path, monkeypatch):
    import kdistill._atomic

    folder = tmp_path / "exp"
    assert run_cli("export", run_file, "--out", folder, "--format", "npy").exit_code == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls = []
    real = kdistill._atomic.write_bytes

    def fail_on_third(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(kdistill._atomic, "write_bytes", fail_on_third)
    for out in (tmp_path / "new", folder):
        calls.clear()
        line = error_line(run_cli("export", run_file, "--out", out, "--format", "npy", "--no-pixels", "--force"))
        assert "No space left on device" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the earlier export, whole
    assert _entries(tmp_path) == ["exp"]  # no new folder, no staging folder


def _truncated(path, good):
    path.write_bytes(good.read_bytes()[:300])


def _pickled(path, good):
    np.savez(path, images=np.array([{"a": 1}], dtype=object), labels=np.eye(1, dtype=np.float32))


def _garbage(path, good):
    path.write_bytes(b"not a zip file at all")


def _bad_sidecar(path, good):
    path.write_bytes(good.read_bytes())
    path.with_suffix(".json").write_text(json.dumps({"ipc": "ten"}))


@pytest.mark.parametrize("make", [_truncated, _pickled, _garbage, _bad_sidecar, None])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_file, tmp_path, make):
    src = tmp_path / "in" / "bad.npz"
    src.parent.mkdir()
    if make is not None:
        make(src, run_file)
    for fmt, out in (("npz", tmp_path / "out" / "e.npz"), ("npy", tmp_path / "out" / "exp")):
        line = error_line(run_cli("export", src, "--out", out, "--format", fmt))
        assert str(src.with_suffix("")) in line  # bad.npz, or its sidecar bad.json
    assert _entries(tmp_path) == ["in"]


def test_bad_options_are_one_line_exit_2(run_file, tmp_path):
    assert "'npq' is not one of" in error_line(run_cli("export", run_file, "--out", tmp_path / "e", "--format", "npq"))
    assert "must end in .npz" in error_line(run_cli("export", run_file, "--out", tmp_path / "e.npy"))
    assert "writes a folder" in error_line(run_cli("export", run_file, "--out", tmp_path / "e.npz", "--format", "npy"))
    assert "'nwhc' is not one of" in error_line(run_cli("export", run_file, "--out", tmp_path / "e.npz", "--layout",
                                                        "nwhc"))
    assert _entries(tmp_path) == []
