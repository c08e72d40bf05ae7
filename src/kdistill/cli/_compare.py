"""``kdistill compare``: many runs in one table and one HTML page."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True)
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None,
              help="Also write a self-contained page here: both tables, accuracy against ipc (error bars: std over "
                   "seeds; the random-real baseline dashed) and against distillation seconds.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the grouped rows here as JSON (accuracies as fractions, {mean, std, n} each).")
@click.option("--force", is_flag=True,
              help="Replace an existing --html/--json file that kdistill compare did not write.")
def compare(run_dirs, html_path, json_path, force):
    """Compare finished runs: one table of every run and one of mean ± std over seeds.

    Each RUN_DIR is a run folder, a folder of run folders one level down (e.g. what `distill --seeds N`
    writes), or a quoted glob pattern such as 'runs/*'. What is not a finished run, or has a damaged
    summary.json, is skipped with a warning.

    Runs form one group when they agree on dataset, method, kernel, ipc and every setting in run.json
    (preprocessing, ridge, val-size, precision, method options) except the seed; whether the full-data
    reference and the baseline were computed, --checkpoint-every and --time-limit are not compared. Accuracies are
    test accuracies in percent: KRR on the distilled set, each finite network `evaluate --model` trained on
    it (the mean over its training seeds), and random real images at the same ipc and kernel; the std is
    the population std over the group's seeds. An --html or --json file is written atomically, and an
    existing one only replaced when an earlier compare wrote it (or with --force).
    """
    from rich.console import Console

    from ..errors import InvalidInputError
    from ..report import (check_compare_targets, collect_runs, group_runs, groups_table, runs_table,
                          write_compare_html, write_compare_json)
    from ._common import _one_line

    def warn(msg: str) -> None:
        click.echo(f"warning: {_one_line(msg)}", err=True)

    skipped: list[str] = []
    runs = collect_runs(run_dirs, on_skip=skipped.append)
    if not runs:  # one line: why each argument was no run (the first few)
        why = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise InvalidInputError(f"no finished runs to compare ({why or 'a run folder holds summary.json'})")
    for msg in skipped:
        warn(f"{msg}; skipped")
    groups = group_runs(runs, on_note=warn)
    check_compare_targets(html_path, json_path, force=force)  # both, before either is written
    written = []  # files first: a refused --html/--json is an error before any table is printed
    if html_path is not None:
        written.append(write_compare_html(runs, html_path, groups=groups, force=force))
    if json_path is not None:
        written.append(write_compare_json(groups, json_path, force=force))
    console = Console(width=max(Console().width, 130))
    console.print(runs_table(runs, title=f"kdistill compare: {len(runs)} run{'s' if len(runs) != 1 else ''}"))
    console.print(groups_table(groups))
    for path in written:
        click.echo(str(path))
