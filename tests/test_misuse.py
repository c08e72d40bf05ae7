"""Runs survive misuse: the output folder is one unit, and nothing already written is damaged.

Each test drives the command line as a careless or hostile user would and checks the contract:
exit status 2, exactly one ``error:`` line, and the files already there byte-identical.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import error_line, run_cli

D = ["distill", "--dataset", "digits", "--ipc", "1", "--no-full", "--no-baseline"]
KIP = [*D, "--method", "kip", "--kernel", "rbf", "--steps", "20", "--target-batch", "200", "--val-every", "10",
       "--val-size", "200", "--checkpoint-every", "5"]


def _exe():
    return os.path.join(os.path.dirname(sys.executable), "kdistill")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def kip_run(tmp_path_factory):
    """A finished 20-step KIP run; tests copy it before touching it."""
    out = tmp_path_factory.mktemp("kip") / "base"
    r = run_cli(*KIP, "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture()
def run_copy(kip_run, tmp_path):
    return Path(shutil.copytree(kip_run, tmp_path / "victim"))


def test_an_earlier_run_is_refused_without_force_and_kept_byte_identical(run_copy):
    before = _snapshot(run_copy)
    line = error_line(run_cli(*D, "--out", run_copy))
    assert "holds an earlier run" in line and "--force" in line and "--resume" in line
    assert _snapshot(run_copy) == before


def test_force_replaces_the_whole_folder_no_stale_history_or_checkpoint(run_copy):
    r = run_cli(*D, "--method", "analytic", "--out", run_copy, "--force")
    assert r.exit_code == 0, r.output
    names = {p.name for p in run_copy.iterdir()}
    assert "history.json" not in names and "checkpoint.npz" not in names  # the old KIP run's files are gone
    assert json.loads((run_copy / "summary.json").read_text())["method"] == "analytic"
    assert json.loads((run_copy / "run.json").read_text())["config"]["method"] == "analytic"
    assert not list(run_copy.parent.glob(".victim*"))  # no leftovers beside it (lock, replaced copy)
    line = error_line(run_cli("distill", "--resume", run_copy))  # analytic has no steps: nothing to resume
    assert "holds an analytic run, which has no steps to continue" in line


BAD_SETTINGS = [["--method", "kip", "--lr", "nan"], ["--method", "kip", "--time-limit", "nan"],
                ["--method", "kip", "--lr", "1e30"], ["--reg", "1e308"], ["--reg", "nan"], ["--seed", "-1"],
                ["--max-dual-n", "-3"], ["--kernel", "rbf:gamma=nan"], ["--kernel", "fc-ntk:depth=1000000000"]]


def test_a_failed_forced_run_changes_nothing(run_copy):
    before = _snapshot(run_copy)
    for bad in BAD_SETTINGS:
        error_line(run_cli(*D, *bad, "--out", run_copy, "--force"))
        assert _snapshot(run_copy) == before, bad
    r = subprocess.run([_exe(), "distill", "--resume", str(run_copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # still resumable


def test_a_run_failing_late_restores_the_replaced_run(run_copy, monkeypatch):
    """Disk full while the final files are written: the earlier run comes back whole."""
    import kdistill.report as report

    before = _snapshot(run_copy)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_copy / "report.html"))

    monkeypatch.setattr(report, "write_report", full)
    line = error_line(run_cli(*D, "--out", run_copy, "--force"))
    assert "No space left on device" in line
    assert _snapshot(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["victim"]


def test_resume_that_fails_writing_keeps_every_earlier_output(run_copy, monkeypatch):
    import kdistill.report as report

    keep = {k: v for k, v in _snapshot(run_copy).items() if k != "checkpoint.npz"}
    monkeypatch.setattr(report, "write_report",
                        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    error_line(run_cli("distill", "--resume", run_copy), after_progress=True)  # after "resuming ... from step 20"
    after = _snapshot(run_copy)
    assert {k: after[k] for k in keep} == keep  # no mix of old and new outputs
    assert not (run_copy / ".kdistill-staging").exists()


def test_too_little_disk_is_refused_before_the_work(tmp_path, monkeypatch):
    import shutil as sh

    real = sh.disk_usage
    monkeypatch.setattr(sh, "disk_usage", lambda p: real(p)._replace(free=1000))
    line = error_line(run_cli(*D, "--out", tmp_path / "o"))
    assert "MiB free" in line and not (tmp_path / "o").exists()


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    from kdistill._atomic import folder_lock

    out = tmp_path / "busy"
    with folder_lock(out.resolve()):
        p = subprocess.run([_exe(), *D, "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert f"in use by another kdistill run (pid {os.getpid()})" in p.stderr
    assert not out.exists()
    assert run_cli(*D, "--out", out).exit_code == 0  # the lock went with its holder


def test_two_runs_at_once_never_mix_their_files(tmp_path):
    """Two processes on one --out: one wins whole, the other is refused (or finds the first's run)."""
    out = tmp_path / "race"
    procs = [subprocess.Popen([_exe(), *D, "--method", m, "--out", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for m in ("random", "analytic")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    winners = [i for i, (rc, _) in enumerate(results) if rc == 0]
    assert len(winners) == 1, results
    for rc, err in results:
        assert rc in (0, 2) and (rc == 0 or len(err.strip().splitlines()) == 1)
    method = ("random", "analytic")[winners[0]]
    assert json.loads((out / "summary.json").read_text())["method"] == method
    assert json.loads((out / "distilled.json").read_text())["method"] == method
    assert json.loads((out / "run.json").read_text())["config"]["method"] == method


def test_interrupted_forced_run_before_any_checkpoint_puts_the_old_run_back(run_copy):
    from kdistill.data import load
    from kdistill.methods import RunConfig
    from kdistill.runs import run_to_dir

    before = _snapshot(run_copy)
    config = RunConfig(method="kip", kernel="rbf", ipc=1, full_reference=False, baseline=False, val_size=200,
                       options=dict(steps=20, target_batch=200, checkpoint_every=0))
    import kdistill.runs._pipeline as pipeline

    orig = pipeline._support_reg

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    pipeline._support_reg = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            run_to_dir(run_copy, load("digits"), config, force=True)
    finally:
        pipeline._support_reg = orig
    assert _snapshot(run_copy) == before


def test_interrupted_forced_run_with_a_checkpoint_is_resumable(run_copy):
    from kdistill.data import load
    from kdistill.methods import RunConfig
    from kdistill.runs import run_to_dir

    config = RunConfig(method="kip", kernel="rbf", ipc=1, seed=3, full_reference=False, baseline=False,
                       val_size=200, options=dict(steps=20, target_batch=200, checkpoint_every=5))

    def hook(step):
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_to_dir(run_copy, load("digits"), config, force=True, on_checkpoint=hook)
    assert sorted(p.name for p in run_copy.iterdir()) == ["checkpoint.npz", "run.json"]
    assert json.loads((run_copy / "run.json").read_text())["config"]["seed"] == 3
    r = subprocess.run([_exe(), "distill", "--resume", str(run_copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((run_copy / "summary.json").read_text())["method_info"]["steps_run"] == 20


def test_killed_forced_run_leftovers_are_recovered(run_copy):
    """A forced run killed (SIGKILL) right after moving the old run aside: the next run puts it back."""
    before = _snapshot(run_copy)
    aside = run_copy.parent / ".victim.kdistill-replaced"
    os.rename(run_copy, aside)
    run_copy.mkdir()  # the new run had begun, without a checkpoint yet
    line = error_line(run_cli(*D, "--out", run_copy))
    assert "holds an earlier run" in line
    assert _snapshot(run_copy) == before and not aside.exists()


def test_resume_works_from_a_moved_copy_and_another_directory(kip_run, tmp_path):
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(kip_run, moved)
    base_before = _snapshot(kip_run)
    other = tmp_path / "cwd"
    other.mkdir()
    r = subprocess.run([_exe(), "distill", "--resume", str(moved)], capture_output=True, text=True, cwd=other)
    assert r.returncode == 0, r.stderr
    assert _snapshot(kip_run) == base_before  # the original is untouched
    assert not any(other.iterdir())


def test_user_dataset_path_is_recorded_absolute_for_resume(tmp_path, monkeypatch):
    import numpy as np

    from kdistill.data import load

    d = load("digits")
    np.savez(tmp_path / "mine.npz", x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    monkeypatch.chdir(tmp_path)
    r = run_cli(*KIP[:1], "--dataset", "mine.npz", *KIP[3:], "--out", "run")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["dataset"] == str(tmp_path / "mine.npz")
    monkeypatch.chdir(tmp_path.parent)  # where mine.npz is not
    r = run_cli("distill", "--resume", tmp_path / "run")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("field,value", [("lr", "abc"), ("steps", -5), ("ipc", "3"), ("kernel", 7)])
def test_damaged_run_json_is_one_line(run_copy, field, value):
    doc = json.loads((run_copy / "run.json").read_text())
    if field in doc["config"]["options"]:
        doc["config"]["options"][field] = value
    else:
        doc["config"][field] = value
    (run_copy / "run.json").write_text(json.dumps(doc))
    before = _snapshot(run_copy)
    line = error_line(run_cli("distill", "--resume", run_copy))
    assert "run.json" in line and field in line
    assert _snapshot(run_copy) == before


def test_forged_checkpoint_step_is_refused(run_copy):
    import numpy as np

    with np.load(run_copy / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    meta["step"] = -50  # keep the old checksum: the forger cannot recompute it without the code
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(run_copy / "checkpoint.npz", **arrays)
    line = error_line(run_cli("distill", "--resume", run_copy))
    assert "checksum" in line


@pytest.mark.parametrize("out", ["", " "])
def test_empty_out_is_refused_and_nothing_is_written(tmp_path, out, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--out is empty" in error_line(run_cli(*D, "--out", out))
    assert not any(tmp_path.iterdir())


def test_a_folder_with_other_files_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        line = error_line(run_cli(*D, "--out", tmp_path, *extra))
        assert "did not write (notes.txt)" in line
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("cmd", [
    [*D, "--out", "/proc/kdistill-x"],
    [*D, "--out", "{file}/sub"],
    ["demo", "--out", "/proc/kdistill-x"],
    ["download", "cifar10", "--data-dir", "/proc/kdistill-x"],
    ["show", "{npz}", "--out", "/proc/kdistill-x/grid.png"],
])
def test_unwritable_output_fails_before_the_work(tmp_path, kip_run, cmd):
    (tmp_path / "afile").write_text("x")
    cmd = [c.format(file=tmp_path / "afile", npz=kip_run / "distilled.npz") for c in cmd]
    line = error_line(run_cli(*cmd))
    assert "not a writable folder" in line or "is a file" in line


def test_show_and_report_never_overwrite_their_inputs(run_copy):
    before = _snapshot(run_copy)
    for out, needle in (("distilled.npz", "must end in .png"), ("summary.json", "must end in .png"),
                        ("distilled.json", "must end in .png")):
        assert needle in error_line(run_cli("show", run_copy / "distilled.npz", "--out", run_copy / out))
    (run_copy / "notes.png").write_text("not an image")
    assert "not a PNG" in error_line(run_cli("show", run_copy / "distilled.npz", "--out", run_copy / "notes.png"))
    assert "max-per-row" in error_line(run_cli("show", run_copy / "distilled.npz", "--out", run_copy / "g.png",
                                               "--max-per-row", "0"))
    assert {k: v for k, v in _snapshot(run_copy).items() if k != "notes.png"} == before
    assert run_cli("report", run_copy).exit_code == 0
    after = _snapshot(run_copy)
    assert {k: after[k] for k in before if k != "report.html"} == {k: v for k, v in before.items()
                                                                   if k != "report.html"}


@pytest.mark.parametrize("doc", [{"test_accuracy": "high"}, {"seconds": {"total": "fast"}},
                                 {"per_class_accuracy": [None, "x"]}, {"finite": {"convnet": {"mean": "x"}}}])
def test_report_on_summary_of_wrong_types_is_one_line(run_copy, doc):
    s = json.loads((run_copy / "summary.json").read_text())
    s.update(doc)
    (run_copy / "summary.json").write_text(json.dumps(s))
    before = _snapshot(run_copy)
    line = error_line(run_cli("report", run_copy))
    assert "summary.json" in line and "wrong type" in line
    assert _snapshot(run_copy) == before


def test_report_on_history_of_wrong_types_is_one_line(run_copy):
    (run_copy / "history.json").write_text(json.dumps({"step": [1, 2], "loss": ["a", {}]}))
    assert "history.json" in error_line(run_cli("report", run_copy))


def test_summary_is_strict_json_and_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        r = run_cli(*KIP, "--out", tmp_path / "o")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    for p in (tmp_path / "o").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        if p.suffix == ".json":
            json.loads(p.read_text(), parse_constant=lambda c: pytest.fail(f"{p.name} holds {c}"))


def test_strict_json_writer_turns_non_finite_into_null(tmp_path):
    import numpy as np

    from kdistill._atomic import write_json

    write_json(tmp_path / "a.json", {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": np.float64("-inf")})
    text = (tmp_path / "a.json").read_text()
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": None} and "NaN" not in text


def test_dual_model_too_big_for_memory_is_refused_with_the_estimate(tmp_path, monkeypatch):
    import kdistill._machine as machine

    monkeypatch.setattr(machine, "memory_bytes", lambda: 2**20)
    line = error_line(run_cli("distill", "--dataset", "digits", "--ipc", "1", "--kernel", "fc-ntk", "--out",
                              tmp_path / "o"))
    assert "of memory and this machine has 1 MiB free" in line and "--max-dual-n" in line and not (tmp_path / "o").exists()


def test_stdout_that_cannot_be_written_is_one_line():
    with open("/dev/full", "w") as full:
        r = subprocess.run([_exe(), "kernels"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "No space left" in r.stderr


def test_huge_learning_rate_is_refused_and_runaway_images_warn():
    import numpy as np

    from kdistill.errors import InvalidInputError
    from kdistill.methods import get_method
    from kdistill.methods.iterative._driver import _warn_scale

    assert next(o for o in get_method("kip").options if o.name == "lr").max <= 10
    method = type("M", (), {"name": "kip", "hint": "lower --lr"})
    real = np.full((4, 2, 2, 1), 3.0)
    with pytest.warns(RuntimeWarning, match="reach"):
        _warn_scale(method, np.full((2, 2, 2, 1), 6e30), real)
    with pytest.raises(InvalidInputError, match="NaN/inf"):
        _warn_scale(method, np.full((2, 2, 2, 1), np.inf), real)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_scale(method, np.full((2, 2, 2, 1), 30.0), real)  # 10x the data: no warning


@pytest.fixture
def two_cores(monkeypatch):
    """The machine the exact kernels' cost per pair was measured on (estimates scale with the cores)."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


def test_exact_convnet_kernel_on_many_pairs_warns_with_an_estimate(two_cores):
    import numpy as np

    from kdistill.data import Dataset
    from kdistill.kernels import from_spec
    from kdistill.methods import RunConfig
    from kdistill.runs._pipeline import _warn_slow_kernel

    rng = np.random.default_rng(0)
    y = np.arange(200) % 10
    ds = Dataset(name="toy", x_train=rng.random((200, 28, 28, 1), dtype=np.float32), y_train=y,
                 x_test=rng.random((5000, 28, 28, 1), dtype=np.float32), y_test=np.arange(5000) % 10,
                 class_names=tuple(map(str, range(10))), source="test")
    with pytest.warns(RuntimeWarning, match=r"convnet-ntk on 28x28 images: evaluating m=100 images .* h on this CPU"):
        _warn_slow_kernel(from_spec("convnet-ntk"), RunConfig(method="random", ipc=10), ds)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_slow_kernel(from_spec("convnet-ntk"), RunConfig(method="random", ipc=1, reg=1e-3),
                          _with_test_size(ds, 200))
        _warn_slow_kernel(from_spec("fc-ntk"), RunConfig(method="random", ipc=10), ds)  # cheap per pair


def _with_test_size(ds, n):
    import dataclasses

    return dataclasses.replace(ds, x_test=ds.x_test[:n], y_test=ds.y_test[:n])


def test_leftovers_of_a_killed_write_do_not_block_resume(run_copy):
    """A SIGKILL during an atomic write leaves `.checkpoint.npz.XXXX.tmp`, a killed cleanup leaves trash:
    neither makes the folder 'foreign', and the next run on it removes them."""
    (run_copy / ".checkpoint.npz.k1l2.tmp").write_bytes(b"partial")
    trash = run_copy.parent / ".victim.kdistill-trash"
    trash.mkdir()
    (trash / "summary.json").write_text("{}")
    r = subprocess.run([_exe(), "distill", "--resume", str(run_copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (run_copy / ".checkpoint.npz.k1l2.tmp").exists() and not trash.exists()


def test_a_fresh_iterative_run_that_fails_late_keeps_its_progress(tmp_path):
    from kdistill.data import load
    from kdistill.errors import InvalidInputError
    from kdistill.methods import RunConfig
    from kdistill.runs import run_to_dir

    out = tmp_path / "fresh"
    config = RunConfig(method="kip", kernel="rbf", ipc=1, seed=3, full_reference=False, baseline=False,
                       val_size=200, options=dict(steps=20, target_batch=200, checkpoint_every=5))

    def fail(step):
        if step == 10:
            raise InvalidInputError("simulated failure at step 10")

    with pytest.raises(InvalidInputError, match="progress is kept: kdistill distill --resume"):
        run_to_dir(out, load("digits"), config, on_checkpoint=fail)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "run.json"]
    r = subprocess.run([_exe(), "distill", "--resume", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_demo_never_replaces_another_run(run_copy):
    before = _snapshot(run_copy)
    line = error_line(run_cli("demo", "--out", run_copy))
    assert "not an earlier demo" in line
    assert _snapshot(run_copy) == before


def test_an_exact_kernel_job_of_days_is_refused_before_anything_is_written(tmp_path, two_cores):
    """An exact ConvNet kernel on 20,000 test images at ipc 50 (about 43 h on a CPU) only warned and started;
    beyond a day it is refused in one line, and the output folder is not created."""
    import numpy as np

    from kdistill.data import Dataset
    from kdistill.errors import InvalidInputError
    from kdistill.methods import RunConfig
    from kdistill.runs import run_to_dir

    rng = np.random.default_rng(0)
    ds = Dataset(name="toy", x_train=rng.random((600, 28, 28, 1), dtype=np.float32), y_train=np.arange(600) % 10,
                 x_test=rng.random((20000, 28, 28, 1), dtype=np.float32), y_test=np.arange(20000) % 10,
                 class_names=tuple(map(str, range(10))), source="test")
    with pytest.raises(InvalidInputError, match=r"convnet-ntk on 28x28 images: evaluating m=500 .* h on this CPU.*more "
                       r"than the 24 h") as info:
        run_to_dir(tmp_path / "run", ds, RunConfig(method="random", ipc=50, kernel="convnet-ntk"))
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()
