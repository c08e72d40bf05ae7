"""Runs: one distillation from data to a described result, in memory or in a run directory.

- :func:`run`: preprocess, call the method, evaluate, and summarise (``RunResult``);
- :func:`run_to_dir`: the same writing a run directory (``distilled.npz``, ``summary.json``, ``run.json``,
  ``history.json``, the report), with ``--resume`` and the directory's lock; :func:`read_run_json` reads its
  settings back, :func:`write_run_outputs` (re)writes the files a finished run leaves;
  :func:`record_finite_result` stores a finite-network accuracy in a run's ``summary.json`` and
  :func:`refresh_report` rewrites its ``report.html`` after such a change.

``kdistill distill`` and :func:`kdistill.distill` are thin wrappers around these.
"""

from ._pipeline import RunResult as RunResult
from ._pipeline import check_run_arguments as check_run_arguments
from ._pipeline import run as run
from ._rundir import RUN_FILES as RUN_FILES
from ._rundir import RESUME_CHANGES as RESUME_CHANGES
from ._rundir import check_out_folder as check_out_folder
from ._rundir import read_run_json as read_run_json
from ._rundir import record_finite_result as record_finite_result
from ._rundir import refresh_report as refresh_report
from ._rundir import run_to_dir as run_to_dir
from ._rundir import write_run_outputs as write_run_outputs

__all__ = ["RunResult", "run", "check_run_arguments", "RUN_FILES", "RESUME_CHANGES", "check_out_folder", "read_run_json", "run_to_dir",
           "write_run_outputs", "record_finite_result", "refresh_report"]
