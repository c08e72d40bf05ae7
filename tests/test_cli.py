"""The command line end to end on digits (always available), and its error handling.

Every bad input must give a one-line message on stderr and exit status 2, never a
traceback, and must leave earlier results untouched.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _helpers import error_line, run_cli


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run_cli("distill", "--dataset", "digits", "--method", "random", "--ipc", "5", "--kernel", "linear",
                "--out", str(out), "--seed", "3")
    assert r.exit_code == 0, r.output
    return out


def test_distill_writes_files_and_summary(random_run):
    s = json.loads((random_run / "summary.json").read_text())
    for key in ("dataset", "method", "kernel", "ipc", "seed", "n_train", "test_accuracy", "full_test_accuracy",
                "seconds", "machine", "versions"):
        assert key in s
    assert (s["dataset"], s["method"], s["kernel"], s["ipc"], s["seed"]) == ("digits", "random", "linear", 5, 3)
    assert s["n_train"] == 1437 and s["machine"]["cores"] >= 1 and "jax" in s["versions"]
    assert 0.5 < s["test_accuracy"] < s["full_test_accuracy"] <= 1.0
    sel = s["reg_selection"]  # --reg auto (default): chosen on held-out training images
    # held out: --val-size (5000) capped at a fifth of the 1437 training images, recorded as used
    assert s["reg"] in sel["grid"] and sel["n_val"] == s["val_size"] == 1437 // 5
    z = np.load(random_run / "distilled.npz")
    assert z["images"].shape == (50, 8, 8, 1) and z["labels"].shape == (50, 10)
    assert z["images"].dtype == np.float32 and z["labels"].dtype == np.float32
    side = json.loads((random_run / "distilled.json").read_text())
    assert side["method"] == "random" and side["preprocess"]["kind"] == "standardize"
    assert (random_run / "distilled.png").stat().st_size > 1000


def test_reg_option(tmp_path):
    r = run_cli("distill", "--dataset", "digits", "--ipc", "2", "--reg", "0.01", "--no-full", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["reg"] == 0.01 and s["reg_selection"] is None and s["full_test_accuracy"] is None
    assert "not requested" in s["full_test_accuracy_note"]
    assert "reg" in error_line(run_cli("distill", "--dataset", "digits", "--reg", "lots", "--out", str(tmp_path)))


def test_evaluate_reproduces_distill_accuracy(random_run):
    s = json.loads((random_run / "summary.json").read_text())
    r = run_cli("evaluate", str(random_run / "distilled.npz"), "--dataset", "digits", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["test_accuracy"] == pytest.approx(s["test_accuracy"], abs=1e-12)


def test_evaluate_kip_style_file(tmp_path):
    """A file with only images and labels (as KIP released them) is evaluated with an explicit kernel."""
    from kdistill.data import load

    ds = load("digits")
    idx = np.arange(0, 200)
    np.savez(tmp_path / "kip.npz", images=ds.x_train[idx], labels=np.eye(10, dtype=np.float32)[ds.y_train[idx]])
    r = run_cli("evaluate", str(tmp_path / "kip.npz"), "--dataset", "digits", "--kernel", "rbf", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["test_accuracy"] > 0.8


def test_analytic_cli_reproduces_full_model(tmp_path):
    r = run_cli("distill", "--dataset", "digits", "--method", "analytic", "--kernel", "fcnn", "--ipc", "1",
                "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["method_info"]["weight_cosine"] > 0.9999
    assert abs(s["test_accuracy"] - s["full_test_accuracy"]) <= 0.0005
    # evaluate recomputes features from the stored images with the stored absolute ridge
    r = run_cli("evaluate", str(tmp_path / "distilled.npz"), "--dataset", "digits", "--json")
    assert json.loads(r.stdout)["test_accuracy"] == pytest.approx(s["test_accuracy"], abs=1e-12)


def test_show_draws_png(random_run, tmp_path):
    r = run_cli("show", str(random_run / "distilled.npz"), "--out", str(tmp_path / "g.png"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_datasets_lists_everything(tmp_path):
    r = run_cli("datasets", "--data-dir", str(tmp_path))
    assert r.exit_code == 0
    for name in ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"):
        assert name in r.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["distill", "--dataset", "nope", "--ipc", "1"], "nope"),
        (["distill", "--dataset", "digits", "--ipc", "0"], "ipc"),
        (["distill", "--dataset", "digits", "--ipc", "1000"], "use ipc 139 or less"),
        (["distill", "--dataset", "digits", "--kernel", "rbf:gamma=x"], "gamma"),
        (["distill", "--dataset", "digits", "--kernel", "ntk9"], "unknown kernel 'ntk9'"),
        (["distill", "--dataset", "digits", "--method", "magic"], "valid methods"),
        (["distill", "--dataset", "digits", "--method", "analytic", "--kernel", "rbf"], "invertible feature map"),
        (["distill", "--dataset", "digits", "--method", "analytic", "--kernel", "fcnn", "--lambda-s", "1e9"],
         "bound"),
        (["distill", "--dataset", "cifar10", "--ipc", "1"], "looked in"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, args, needle):
    env = {"KDISTILL_DATA": str(tmp_path / "empty")}
    r = run_cli(*args, "--out", str(tmp_path / "out"), env=env)
    assert needle in error_line(r)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_nan_in_user_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((20, 4, 4, 1)).astype(np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=np.arange(20) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    r = run_cli("distill", "--dataset", str(tmp_path / "mine.npz"), "--ipc", "1", "--out", str(tmp_path / "o"))
    assert "NaN" in error_line(r)


def test_user_arrays_work(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 4, 4, 1)).astype(np.float32)
    y = np.arange(40) % 2
    x[y == 1] += 3.0  # two well separated clusters
    np.savez(tmp_path / "mine.npz", x_train=x / 4, y_train=y, x_test=x[:10] / 4, y_test=y[:10])
    r = run_cli("distill", "--dataset", str(tmp_path / "mine.npz"), "--ipc", "3", "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["test_accuracy"] == 1.0


def test_corrupt_and_malicious_files(tmp_path, random_run):
    data = (random_run / "distilled.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(data[:100])
    assert "half.npz" in error_line(run_cli("evaluate", str(tmp_path / "half.npz"), "--dataset", "digits"))
    # a dataset pickle that tries to run code
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    cdir = tmp_path / "data" / "cifar10"
    cdir.mkdir(parents=True)
    import io as _io
    import tarfile

    payload = pickle.dumps(Evil(), protocol=2)
    with tarfile.open(cdir / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                     "test_batch", "batches.meta"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, _io.BytesIO(payload))
    r = run_cli("distill", "--dataset", "cifar10", "--ipc", "1", "--out", str(tmp_path / "o"),
                "--data-dir", str(tmp_path / "data"))
    assert "refusing" in error_line(r)
    assert not (tmp_path / "pwned").exists()


def test_evaluate_wrong_dataset_shape(random_run, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", x_train=rng.random((20, 5, 5, 1)), y_train=np.arange(20) % 10,
             x_test=rng.random((10, 5, 5, 1)), y_test=np.arange(10))
    # a bare set with no record of its dataset (like KIP's released files): the shapes decide
    (tmp_path / "bare.npz").write_bytes((random_run / "distilled.npz").read_bytes())
    r = run_cli("evaluate", str(tmp_path / "bare.npz"), "--dataset", str(tmp_path / "mine.npz"), "--kernel", "linear")
    assert "wrong --dataset" in error_line(r)
    # with its record, another dataset is refused before any shape is compared
    r = run_cli("evaluate", str(random_run / "distilled.npz"), "--dataset", str(tmp_path / "mine.npz"))
    assert "was distilled from 'digits'" in error_line(r)


def test_failed_run_keeps_previous_results(random_run):
    before = (random_run / "summary.json").read_bytes()
    r = run_cli("distill", "--dataset", "digits", "--ipc", "999", "--out", str(random_run))
    error_line(r)
    assert (random_run / "summary.json").read_bytes() == before


def test_console_script_exit_status(tmp_path):
    """The installed entry point (not only click's runner) exits 2 with one line."""
    exe = os.path.join(os.path.dirname(sys.executable), "kdistill")
    p = subprocess.run([exe, "distill", "--dataset", "digits", "--ipc", "-1", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1


def test_kernels_lists_every_family():
    from kdistill.kernels import families

    r = run_cli("kernels")
    assert r.exit_code == 0
    for name in families():
        assert name in r.stdout


def test_float32_precision_matches_float64(tmp_path):
    """--precision float32 runs the kernels in float32 and lands on the same set for a simple method."""
    args = ["distill", "--dataset", "digits", "--method", "label-solve", "--kernel", "fc-ntk:depth=1", "--ipc", "2",
            "--no-full"]
    r32 = run_cli(*args, "--precision", "float32", "--out", str(tmp_path / "a"))
    assert r32.exit_code == 0, r32.output
    r64 = run_cli(*args, "--out", str(tmp_path / "b"))
    assert r64.exit_code == 0, r64.output
    l32 = np.load(tmp_path / "a" / "distilled.npz")["labels"]
    l64 = np.load(tmp_path / "b" / "distilled.npz")["labels"]
    np.testing.assert_allclose(l32, l64, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(l32, l64)  # it really ran in another precision
    assert json.loads((tmp_path / "a" / "run.json").read_text())["config"]["precision"] == "float32"


@pytest.mark.parametrize("start", [False, True])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_cli_in_process_leaves_x64_as_it_was(tmp_path, start, precision):
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", start)
    try:
        r = run_cli("distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "1", "--steps", "2",
                    "--target-batch", "50", "--val-every", "0", "--no-full", "--precision", precision,
                    "--out", str(tmp_path / "o"))
        assert r.exit_code == 0, r.output
        assert jax.config.jax_enable_x64 is start
        r = run_cli("evaluate", str(tmp_path / "o" / "distilled.npz"), "--dataset", "digits", "--json")
        assert r.exit_code == 0, r.output
        assert jax.config.jax_enable_x64 is start
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("args,needle", [
    (["distill", "--bogus", "1"], "No such option '--bogus'"),
    (["distill", "--ipc", "abc"], "'abc' is not a valid integer"),
    (["bogus"], "No such command 'bogus'"),
    (["--bogus"], "No such option '--bogus'"),
    (["evaluate"], "Missing argument"),
])
def test_click_usage_errors_are_one_line_too(args, needle):
    line = error_line(run_cli(*args))
    assert needle in line and "--help" in line


def test_default_out_is_a_new_named_folder_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for expected in ("runs/digits-random-ipc1", "runs/digits-random-ipc1-2"):
        r = run_cli("distill", "--dataset", "digits", "--method", "random", "--ipc", "1", "--no-full")
        assert r.exit_code == 0, r.output
        assert (tmp_path / expected / "summary.json").exists()


def test_evaluate_takes_the_recorded_dataset_refuses_another_and_accepts_reg_auto(random_run):
    file = str(random_run / "distilled.npz")
    r = run_cli("evaluate", file, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["dataset"] == "digits"
    assert res["test_accuracy"] == json.loads((random_run / "summary.json").read_text())["test_accuracy"]
    line = error_line(run_cli("evaluate", file, "--dataset", "fashion_mnist"))
    assert "was distilled from 'digits', not 'fashion_mnist'" in line
    auto = json.loads(run_cli("evaluate", file, "--reg", "auto", "--json").stdout)
    sel = auto["reg_selection"]
    assert auto["reg"] == sel["reg"] and max(sel["val_accuracy"]) == sel["val_accuracy"][sel["grid"].index(sel["reg"])]
    assert "reg must be 'auto' or a number" in error_line(run_cli("evaluate", file, "--reg", "x"))
    # a mistyped path is reported as missing, not as a file without a recorded dataset
    missing = str(random_run / "nothing" / "distilled.npz")
    for extra in ([], ["--model", "convnet"]):
        assert error_line(run_cli("evaluate", missing, *extra)) == f"error: {missing}: no such file"


@pytest.mark.parametrize("method_args", [["--method", "random", "--ipc", "1"],
                                         ["--method", "random", "--ipc", "1", "--preprocess", "zca"],
                                         ["--method", "kip", "--kernel", "rbf", "--ipc", "2", "--steps", "4",
                                          "--learn-labels"]])
def test_the_free_space_check_asks_for_what_a_run_writes_within_2x(tmp_path, method_args):
    """The disk guard asked 16 MiB of a run that writes 150 KB, refusing runs that fit: its estimate is now
    between what the run leaves on disk and twice that (FRePo's pool: tests/test_frepo.py)."""
    from kdistill.data import load
    from kdistill.methods import RunConfig
    from kdistill.runs._rundir import _disk_need

    out = tmp_path / "run"
    r = run_cli("distill", "--dataset", "digits", *method_args, "--no-full", "--out", str(out))
    assert r.exit_code == 0, r.output
    written = sum(f.stat().st_size for f in out.iterdir())
    run = json.loads((out / "run.json").read_text())["config"]
    need = _disk_need(RunConfig(method=run["method"], ipc=run["ipc"], preprocess=run["preprocess"],
                                options=run["options"]), load("digits"))
    assert written <= need <= 2 * written, (written, need)


def test_a_sidecar_naming_its_dataset_by_a_relative_path_reads_it_beside_the_sidecar(tmp_path, monkeypatch):
    """A sidecar recording ``mine.npz`` (a set shipped with its data, say) was opened relative to the current
    folder, with no word that the path came from the sidecar: it is read beside the sidecar, and a missing
    one is named with the file that recorded it."""
    import shutil

    rng = np.random.default_rng(0)
    x = rng.random((40, 4, 4, 1)).astype(np.float32)
    y = np.arange(40) % 2
    x[y == 1] += 3.0
    np.savez(tmp_path / "mine.npz", x_train=x / 4, y_train=y, x_test=x[:10] / 4, y_test=y[:10])
    r = run_cli("distill", "--dataset", str(tmp_path / "mine.npz"), "--ipc", "3", "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(tmp_path / "o" / "distilled.npz", shipped / "set.npz")
    side = json.loads((tmp_path / "o" / "distilled.json").read_text())
    (shipped / "set.json").write_text(json.dumps(dict(side, dataset="mine.npz")))
    shutil.copy(tmp_path / "mine.npz", shipped / "mine.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = run_cli("evaluate", str(shipped / "set.npz"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["test_accuracy"] == 1.0
    (shipped / "mine.npz").unlink()
    line = error_line(run_cli("evaluate", str(shipped / "set.npz")))
    assert f"{shipped / 'set.json'} records the dataset 'mine.npz'" in line and "--dataset" in line
    # the sidecar as a run writes it (the file's stem), away from its run.json, with --dataset given
    (shipped / "set.json").write_text(json.dumps(side))
    assert side["dataset"] == "mine"
    r = run_cli("evaluate", str(shipped / "set.npz"), "--dataset", str(tmp_path / "mine.npz"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["test_accuracy"] == 1.0


@pytest.mark.parametrize("args,needle", [
    (["distill", "--dataset", "digits", "--method", "kipp"],
     "error: unknown method 'kipp'; did you mean 'kip'? (kdistill methods lists them)"),
    (["distill", "--dataset", "digits", "--method", "label_solve"], "did you mean 'label-solve'?"),
    (["distill", "--dataset", "digits", "--kernel", "linaer"],
     "error: unknown kernel 'linaer'; did you mean 'linear'? (kdistill kernels lists them)"),
    (["distill", "--dataset", "digits", "--kernel", "fc_ntk:depth=2"], "did you mean 'fc-ntk'?"),
    (["distill", "--dataset", "digits", "--kernel", "rbf:gama=1"],
     "kernel 'rbf' has no parameter 'gama'; did you mean 'gamma'? (valid parameters: gamma)"),
    (["distill", "--dataset", "digits", "--method", "kip", "--learning-rate", "0.1"],  # click alone: --learn-labels
     "error: No such option '--learning-rate'; did you mean '--lr'? (kdistill distill --help lists them)"),
    (["distill", "--dataset", "digits", "--learn_labels"], "did you mean '--learn-labels'?"),  # a method's flag
    (["distill", "--dataset", "digits", "--val", "10"], "did you mean '--val-size', '--val-every' or '--val-steps'?"),
    (["evaluate", "x.npz", "--seed", "1"], "did you mean '--seeds'? (kdistill evaluate --help lists them)"),
])
def test_a_typo_gets_a_did_you_mean(tmp_path, args, needle):
    line = error_line(run_cli(*args, "--out", str(tmp_path / "out")))
    assert needle in line


@pytest.mark.parametrize("args,needle", [
    (["distill", "--dataset", "digits", "--method", "magic"], "valid methods: analytic, coreset, dc, frepo, kip"),
    (["distill", "--dataset", "digits", "--kernel", "gaussian"], "valid kernels: cnn, convnet-nngp"),
    (["distill", "--dataset", "digits", "--kernel", "rbf:width=2"], "valid parameters: gamma"),
    (["distill", "--dataset", "digits", "--zebra", "1"], "No such option '--zebra'; see kdistill distill --help"),
])
def test_a_far_off_word_gets_no_suggestion_but_the_list(tmp_path, args, needle):
    line = error_line(run_cli(*args, "--out", str(tmp_path / "out")))
    assert needle in line and "did you mean" not in line.lower()


def test_suggest_ranks_same_names_abbreviations_then_close_strings():
    from kdistill._suggest import did_you_mean, suggest

    flags = ["--learn-labels", "--lr", "--lr-net", "--steps", "--seed", "--val-size", "--val-every"]
    assert suggest("--learning-rate", flags) == ["--lr"]  # initials of its words
    assert suggest("--learn_labels", flags) == ["--learn-labels"]  # the same name: alone
    assert suggest("--ll", flags) == ["--learn-labels"]
    assert suggest("--ste", flags) == ["--steps"]  # a prefix of 3 letters or more
    assert suggest("--st", flags) == []
    assert suggest("--seeds", flags) == ["--seed"]  # string ratio (difflib)
    assert suggest("--valsize", flags) == ["--val-size"]
    assert suggest("--zebra", flags) == [] and suggest("x", []) == []
    assert suggest("kip", ["kip", "rfad"]) == []  # the word itself is no suggestion
    assert did_you_mean("--val", flags) == "did you mean '--val-size' or '--val-every'?"
    assert did_you_mean("--zebra", flags) is None


def test_analytic_kernels_are_one_list_that_matches_the_registry_the_readme_and_the_messages(tmp_path):
    """Every name kdistill methods, check_kernel's message and the README give for analytic's kernels is a
    kernel family with an explicit feature map and an inverse (what the method needs), and every such one is
    named."""
    import re
    from pathlib import Path

    from kdistill.kernels import families, from_spec
    from kdistill.methods import methods
    from kdistill.methods._analytic import KERNELS

    invertible = {n for n in families() if from_spec(n).features is not None and from_spec(n).inverse is not None}
    assert set(KERNELS) == invertible and len(KERNELS) == len(set(KERNELS))
    assert f"kernels {', '.join(KERNELS)}" in methods()["analytic"].doc
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `analytic` |"))
    assert set(re.findall(r"`([^`]+)`", row.rstrip(" |").rsplit(" | ", 1)[1])) == set(KERNELS)
    line = error_line(run_cli("distill", "--dataset", "digits", "--method", "analytic", "--kernel", "rbf",
                              "--out", str(tmp_path / "o")))
    assert f"({', '.join(KERNELS)})" in line
