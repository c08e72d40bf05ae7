"""A run's time budget, honest results, resuming with new evaluation flags, and progress times.

- ``--time-limit`` bounds the whole run: the learning phase gets what is left once evaluating the set is set
  aside; the baseline and the full-data reference are skipped, with a line naming the flag, when their
  estimate does not fit (estimates are replaced by large ones here, so the decisions do not depend on how
  fast this machine is);
- the driver validates the starting set (step 0) and keeps it when no step beats it; the summary, the
  table and the report say so, and flag a set scoring below random real images;
- ``--resume`` accepts ``--no-full``, ``--no-baseline`` and ``--time-limit``, says where it resumes and
  refuses every other flag;
- the ETA of a loop leaves out its first step (which compiles).
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from _helpers import error_line, three_digits
from kdistill.cli import cli
from kdistill.cli._common import summary_rows
from kdistill.methods import RunConfig
from kdistill.runs import _budget, _pipeline, run, run_to_dir
from kdistill.runs._budget import Budget, Rates


@pytest.fixture(scope="module")
def digits():
    return three_digits()


def _kip(**kw) -> RunConfig:
    options = {"steps": 30, "target_batch": 60, "val_every": 5, "checkpoint_every": 5, **kw.pop("options", {})}
    return RunConfig(method="kip", kernel="rbf", ipc=2, seed=1, val_size=100, precision="float64", options=options,
                     **kw)


# ---- estimates and the budget's decisions ----------------------------------------------------------------

def test_estimates_are_the_counted_work_at_the_measured_rates():
    """``Rates`` turns per-image (or per-value) seconds and GEMM rates into seconds, term by term, for the
    algorithms evaluate.full_data_reference runs (primal: features, float64 Gram matrix, one eigh of about
    10 p^3 flop, the refit's Cholesky, the held-out and test products; dual: the kernel and its eigh)."""
    feat = Rates(per_image=2e-3, per_pair=None, feature_dim=100, gemm_flops=1e9, gemm64_flops=5e8)
    n, m, p = 1000, 10, 100
    assert feat.images(n, m) == pytest.approx((n + m) * 2e-3 + 2 * n * m * p / 1e9 + m**3 / 5e8)
    n_tr, n_te, vf = 5000, 1000, 0.05
    n_val = vf * n_tr
    primal = ((n_tr + n_val + n_te) * 2e-3
              + (2 * (n_tr + n_val) * p**2 + 10 * p**3 + p**3 / 3 + 2 * (n_val + n_te) * p**2) / 5e8)
    assert feat.full(n_tr, n_te, vf, max_dual_n=0) == pytest.approx(primal)  # primal: max_dual_n plays no part
    dual = Rates(per_image=None, per_pair=1e-6, feature_dim=None, gemm_flops=1e9)  # float64 rate: half of float32
    assert dual.images(n, m) == pytest.approx(n * m * 1e-6 + m**3 / 5e8)
    assert dual.full(4000, 1000, vf, max_dual_n=10_000) == pytest.approx(
        5000 * 4000 * 1e-6 + (10 + 1 / 3) * 4000**3 / 5e8)
    assert dual.full(20_000, 1000, vf, max_dual_n=10_000) is None  # not computed at all: nothing to budget


def test_the_probe_times_features_or_kernel_values(digits):
    from kdistill.kernels import from_spec

    x = digits.x_train.astype(np.float32)
    lin = _budget.probe(from_spec("linear"), x, m=6)
    assert lin.per_pair is None and lin.feature_dim == 64 and 0 < lin.per_image < 1
    assert lin.gemm_flops > 1e8 and lin.gemm64_flops > 1e8
    rbf = _budget.probe(from_spec("rbf"), x, m=6)
    assert rbf.per_image is None and rbf.feature_dim is None and 0 < rbf.per_pair < 1
    ntk = from_spec("convnet-ntk")  # exact ConvNet kernels: their measured seconds per pair, not a probe
    assert _budget.probe(ntk, x, m=6).per_pair == pytest.approx(
        ntk.pair_seconds((8, 8, 1)) * 2 / _budget.usable_cores())


def test_a_budget_skips_only_optional_phases_that_do_not_fit():
    lines = []
    b = Budget(100, started=time.perf_counter(), spent=30, say=lines.append)
    assert 69 < b.left() <= 70
    assert b.phase("evaluate", 500.0, what="evaluating")  # required: runs whatever its estimate
    assert b.phase("baseline", 10.0, what="baseline", optional_flag="--no-baseline")
    assert not b.phase("full_reference", 400.0, what="full", optional_flag="--no-full")
    assert list(b.skipped) == ["full_reference"] and "--no-full" in b.skipped["full_reference"]
    assert len(lines) == 3 and "about 6.7 min" in lines[2] and "--time-limit 100" in lines[2]
    assert b.describe()["estimates"] == {"evaluate": 500.0, "baseline": 10.0, "full_reference": 400.0}
    # the learning phase: what is left less the reserve (with a quarter spare) and the writing
    assert b.learning_seconds(20.0) == pytest.approx(b.left() - 1.25 * 20 - 5, abs=0.1)
    assert b.learning_seconds(1e6) == pytest.approx(1e-3)  # at least one step, whatever the limit
    free = Budget(0, started=time.perf_counter())
    assert free.left() == float("inf") and free.learning_seconds(5.0) == 0.0
    assert free.phase("full_reference", 1e9, what="full", optional_flag="--no-full")


def test_a_run_past_its_budget_skips_the_baseline_and_full_reference_and_says_why(digits, monkeypatch, capsys):
    """Evaluating is estimated at 2 s, the baseline at 1 s and the full-data reference at an hour: with 12 s
    for the whole run the learning stops by time (its share: 12 - 5 - 1.25 * (2 + 1) s at most, room kept for
    the evaluation and the baseline), the baseline runs, the reference is skipped, and the summary and the
    lines say why and name the flag."""
    slow = Rates(per_image=None, per_pair=1.0, feature_dim=None, gemm_flops=1e12)
    monkeypatch.setattr(_pipeline, "probe", lambda *a, **k: slow)
    monkeypatch.setattr(_pipeline, "_estimates", lambda *a, **k: {"evaluate": 2.0, "baseline": 1.0,
                                                                  "full_reference": 3600.0})
    seen = []
    real = _budget.Budget.learning_seconds
    monkeypatch.setattr(_budget.Budget, "learning_seconds", lambda self, r: seen.append(real(self, r)) or seen[-1])
    cfg = _kip(time_limit=12.0, options={"steps": 10**6})
    result = run(digits, cfg, progress=True)
    s = result.summary
    assert 12 - 5 - 3.75 - 1 < seen[0] <= 12 - 5 - 3.75
    assert s["method_info"]["stop_reason"] == "time_limit" and s["method_info"]["steps_run"] < 10**6
    assert s["seconds"]["total"] < 12 + 15  # (generous for a loaded machine: the decisions are what is tested)
    assert s["baseline"] is not None and s["full_test_accuracy"] is None and "baseline_note" not in s
    assert "--no-full" in s["full_test_accuracy_note"] and "--time-limit 12" in s["full_test_accuracy_note"]
    assert set(s["budget"]["skipped"]) == {"full_reference"} and s["budget"]["time_limit"] == 12.0
    err = capsys.readouterr().err
    assert "random-real baseline (6 real images), about 0 s" in err and "full-data reference" in err
    # the evaluation took far less than its 2 s: the later estimates are scaled down by as much (at most 5x)
    assert 3600 * 0.2 <= s["budget"]["estimates"]["full_reference"] <= 3600 * 0.5
    assert err.index("kip: learning until its share") < err.index("evaluating the 6 distilled images")


def test_the_cli_time_limit_covers_the_whole_run_and_a_bad_one_is_refused(tmp_path):
    r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "1",
                                 "--steps", "1000000", "--val-every", "20", "--time-limit", "8", "--out",
                                 str(tmp_path / "run")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["method_info"]["stop_reason"] == "time_limit" and s["config"]["time_limit"] == 8.0
    # the whole command in-process (no interpreter start): the run and the seconds before it (loading)
    assert s["seconds"]["total"] + s["seconds"]["load_data"] < 8 + 20  # (generous for a loaded machine)
    for bad in ("0", "-3", "nan"):
        r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--time-limit", bad, "--out",
                                     str(tmp_path / "bad")])
        assert "--time-limit must be a number of seconds > 0" in error_line(r)
    assert not (tmp_path / "bad").exists()


# ---- the starting set and below-random results ---------------------------------------------------------

def test_when_every_step_makes_the_set_worse_the_starting_set_is_returned_and_flagged(digits, monkeypatch, tmp_path):
    """Validation scores fall with every call (0.9 for the starting set, then lower): the result is the
    starting set, and the warning, the summary and the report say so."""
    from kdistill.methods.iterative import _register

    calls = []

    def worse(*a):
        calls.append(1)
        return 0.9 - 0.1 * len(calls)

    real = _register.run_iterative
    monkeypatch.setattr(_register, "run_iterative",
                        lambda method, *a, **k: real(dataclasses.replace(method, validate=worse), *a, **k))
    with pytest.warns(RuntimeWarning, match="no step of kip beat the starting set"):
        result, summary = run_to_dir(tmp_path / "run", digits, _kip(options={"steps": 10}), dataset_ref="digits")
    np.testing.assert_array_equal(result.distilled.images, result.init_images)
    assert result.history["val_step"][0] == 0 and len(calls) == 3  # steps 0, 5, 10
    info = summary["method_info"]
    assert info["best_step"] == 0 and info["best_val_accuracy"] == pytest.approx(0.8)
    assert summary["kept_start"] is True and any("starting set" in w for w in summary["warnings"])
    page = (tmp_path / "run" / "report.html").read_text()
    assert "class='warn'" in page and "beat the starting set" in page


def test_a_set_below_random_real_is_flagged_in_the_summary_and_the_table():
    summary = {"test_accuracy": 0.108, "baseline": {"test_accuracy": 0.667}, "method": "dc", "val_size": 287,
               "method_info": {"best_step": 4, "steps_run": 20, "best_val_accuracy": 0.3}}
    notes = _pipeline._honesty(summary)
    assert summary["below_random"] is True and "kept_start" not in summary
    assert notes == ["the distilled set scores below random real images under the same evaluation "
                     "(10.80% < 66.70%)"]
    row = summary_rows(dict(summary, dataset="digits", kernel="linear", ipc=1, full_test_accuracy=None,
                            seconds={"distill": 1.0, "total": 2.0}))[0]
    assert row["distilled acc"] == "10.80% (below random)"
    above = {"test_accuracy": 0.9, "baseline": {"test_accuracy": 0.667}, "method": "kip", "method_info": {}}
    assert _pipeline._honesty(above) == [] and "below_random" not in above


def test_dc_on_digits_learns_with_its_default_network_depth():
    """DC's depth-3 ConvNet normalises 2x2 maps on 8x8 images and its matching diverged: the default depth
    follows the image size (DC's 3 from 16x16 up)."""
    from kdistill.methods._dc import dc_depth_for

    assert [dc_depth_for((s, s)) for s in (4, 8, 12, 16, 28, 32, 64)] == [1, 2, 2, 3, 3, 3, 3]
    assert dc_depth_for((8, 32)) == 2  # the smaller side decides


# ---- resuming with other evaluation flags ------------------------------------------------------------------

def test_resume_accepts_the_evaluation_flags_and_says_where_it_resumes(tmp_path):
    out = tmp_path / "run"
    base = ["distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "1", "--steps", "40",
            "--val-every", "10", "--checkpoint-every", "10", "--val-size", "100", "--out", str(out)]
    r = CliRunner().invoke(cli, [*base, "--time-limit", "1e-3"], catch_exceptions=False)  # stops after one step
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["distill", "--resume", str(out), "--no-full", "--no-baseline", "--time-limit",
                                 "600"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "resuming " in r.stderr and "from step 1 of 40" in r.stderr and "best validation" in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["baseline"] is None and s["full_test_accuracy_note"] == "not requested (--no-full)"
    assert s["method_info"]["steps_run"] == 40 and s["config"]["time_limit"] == 600.0
    assert json.loads((out / "run.json").read_text())["config"]["time_limit"] == 600.0  # the record follows
    r = CliRunner().invoke(cli, ["distill", "--resume", str(out), "--ipc", "2", "--no-full"])
    line = error_line(r)
    assert "drop --ipc" in line and "only --time-limit, --full/--no-full and --baseline/--no-baseline" in line
    (out / "checkpoint.npz").unlink()  # stopped before its first checkpoint: nothing to resume, said once
    assert "nothing to resume" in error_line(CliRunner().invoke(cli, ["distill", "--resume", str(out)]))


def test_seeds_share_the_time_limit_and_keep_their_folder_to_themselves(tmp_path, monkeypatch):
    """--seeds 3 --time-limit 30: each run gets an equal part of what is left when it starts (the seconds
    before the runs counted once); OUT holding anything else, or a single run, is refused before loading."""
    from kdistill import _machine
    from kdistill.runs import _rundir

    monkeypatch.setattr(_machine, "process_seconds", lambda: 0.5)  # (this test process is older than a command)
    limits, spent = [], []
    real = _rundir.run

    def record(dataset, config, **kw):
        limits.append(config.time_limit)
        spent.append(kw.get("spent"))
        return real(dataset, config, **kw)

    monkeypatch.setattr(_rundir, "run", record)
    out = tmp_path / "seeds"
    r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "1",
                                 "--steps", "5", "--seeds", "3", "--seed", "7", "--time-limit", "30", "--out",
                                 str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["seed-7", "seed-8", "seed-9"] and spent == [0.0] * 3
    assert 30 / 3 - 5 < limits[0] <= 30 / 3 and all(a <= b + 1e-6 for a, b in zip(limits, limits[1:]))
    assert " ± " in r.output  # the grouped table: mean ± std over the three seeds
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--seeds", "2", "--out", str(tmp_path / "other")])
    assert "notes.txt, which --seeds did not write" in error_line(r)
    r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--seeds", "2", "--out", str(out / "seed-7")])
    assert "holds a single run" in error_line(r)
    r = CliRunner().invoke(cli, ["distill", "--resume", str(out)])
    assert "holds the runs of --seeds; resume each one" in error_line(r)


def test_the_learning_phase_alone_has_a_limit_of_its_own(digits):
    """``--learn-time-limit`` (the option ``time_limit``: what ``--time-limit`` meant before it bounded the
    whole run) stops the learning and nothing else: the baseline and the full-data reference still run."""
    cfg = dataclasses.replace(_kip(options={"steps": 10**6, "time_limit": 1e-9}), full_reference=True, baseline=True)
    s = run(digits, cfg).summary
    assert s["method_info"]["stop_reason"] == "time_limit" and s["method_info"]["steps_run"] == 1
    assert s["baseline"] is not None and s["full_test_accuracy"] is not None and s["budget"]["skipped"] == {}
    from kdistill.methods import cli_flags

    assert cli_flags()["--learn-time-limit"].name == "time_limit" and "--time-limit" not in cli_flags()


# ---- progress times ---------------------------------------------------------------------------------

def test_the_eta_leaves_out_the_first_step(monkeypatch):
    from kdistill import _progress

    now = [0.0]
    monkeypatch.setattr(_progress, "_clock", _progress._clock)
    rate = _progress._Rate(total=101, completed=0)
    rate._time = lambda: now[0]
    rate._start = 0.0
    assert "eta (after the first step)" in rate.text()
    now[0] = 60.0  # the first step compiles for a minute
    rate.step()
    assert rate.text() == "elapsed 0:01:00  eta (after the first step)"
    for _ in range(10):  # then a second per step
        now[0] += 1.0
        rate.step()
    assert rate.text() == "elapsed 0:01:10  eta 0:01:30"  # 90 steps left at 1 s (not at 70 s / 11 steps)
    assert _progress._fields({"loss": 0.123456, "val": 0.8181}) == "loss 0.1235  val 81.8%"


# ---- on a GPU ------------------------------------------------------------------------------------------

class _FakeGPU:
    platform = "gpu"

    def __init__(self, limit, used):
        self._stats = {"bytes_limit": limit, "bytes_in_use": used}

    def memory_stats(self):
        return self._stats


def test_on_an_accelerator_auto_precision_is_float32_and_memory_is_the_devices(monkeypatch, digits):
    """What changes on a GPU, without one: JAX's backend and device are replaced by fakes."""
    import jax

    from kdistill import _machine
    from kdistill.errors import InvalidInputError

    assert _machine.device_memory_bytes() is None and _machine.auto_precision("float64") == "float64"  # a CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda *a: [_FakeGPU(limit=8 * 2**30, used=2 * 2**30)])
    assert _machine.device_memory_bytes() == 6 * 2**30
    assert _machine.auto_precision("float64") == "float32" and _machine.auto_precision("float32") == "float32"
    _machine.check_memory(5 * 2**30, "a matrix", "use less")
    with pytest.raises(InvalidInputError, match="a matrix needs about 7 GiB of memory and the accelerator has "
                                                "6 GiB free; use less"):
        _machine.check_memory(7 * 2**30, "a matrix", "use less")
    cfg = _pipeline._validate(RunConfig(method="kip", kernel="rbf", ipc=1, precision="auto"), digits)
    assert cfg.precision == "float32"
    assert _pipeline._validate(RunConfig(method="kip", kernel="rbf", ipc=1, precision="float64"),
                               digits).precision == "float64"  # asked for: kept


def test_the_terminal_bar_labels_its_times_and_prints_validations_in_percent(monkeypatch):
    """On a terminal (a pseudo-terminal here) the live bar shows 'elapsed' and 'eta' with the fields; the
    validation lines left in the scrollback are in percent."""
    import io

    from rich.console import Console

    from kdistill import _progress

    buf = io.StringIO()
    real = Console
    monkeypatch.setattr("rich.console.Console", lambda *a, **k: real(file=buf, force_terminal=True, width=150))
    monkeypatch.setattr("sys.stderr", type("T", (io.StringIO,), {"isatty": lambda self: True})())
    with _progress.step_bar(3, description="kip") as bar:
        bar.note(0, val=0.5)
        bar.update(loss=0.25)
        bar.update(loss=0.125, val=0.75)
        bar.update(loss=0.0625)
    import re

    out = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue())  # without the terminal's colour codes
    assert "kip step 0/3  val 50.0%" in out and "kip step 2/3  loss 0.125  val 75.0%  elapsed 0:00:00" in out
    assert "elapsed" in out and "eta" in out
