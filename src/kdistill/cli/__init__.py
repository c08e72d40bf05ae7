"""The ``kdistill`` command line: parse, call the library, print, write files.

Every error caused by input (a :class:`~kdistill.errors.KDistillError`) is printed
as one line on stderr and exits with status 2.

The group and the error handling live here; each command group in a module of its own:
``_distill`` (distill), ``_evaluate`` (evaluate), ``_listings`` (datasets, kernels, methods),
``_files`` (download, show, demo, report), ``_compare`` (compare), ``_export`` (export), and what they share in ``_common``. Heavy modules
(jax, the methods) are imported inside the commands, so ``kdistill --help`` starts fast.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import click

from ..errors import KDistillError
from . import _compare, _distill, _evaluate, _export, _files, _listings
from ._common import DATASET_HELP as DATASET_HELP
from ._common import _one_line
from ._common import summary_rows as summary_rows
from ._files import DEMO as DEMO

__all__ = ["cli", "main"]


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KDistillError as e:
            click.echo(f"error: {_one_line(str(e))}", err=True)
            sys.exit(2)
        except click.UsageError as e:  # click's own (unknown flag, bad int): one line too, not a usage block
            _usage_error(e)
        except OSError as e:  # disk full, permissions, a file vanished: the system's reason, one line
            from .._atomic import describe_os_error

            click.echo(f"error: {_one_line(describe_os_error(e))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo(f"interrupted{ctx.meta.get('kdistill_interrupt_hint', '')}", err=True)
            sys.exit(128 + _SIGNAL.get("number", 2))  # 130 for Ctrl-C, 143 for SIGTERM

    def make_context(self, info_name, args, parent=None, **extra):
        bare = not args  # (click consumes args while parsing)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:  # options of the group itself (kdistill --bogus)
            if bare and e.ctx is not None:  # a bare `kdistill`: the help, as --help would print it
                click.echo(e.ctx.get_help())
                sys.exit(0)
            _usage_error(e)


def _usage_error(e: click.UsageError):
    where = " ".join(e.ctx.command_path.split()[1:]) if e.ctx is not None else ""
    hint = f"; see kdistill {where + ' ' if where else ''}--help"
    message = _one_line(e.format_message()).rstrip(".")
    if isinstance(e, click.NoSuchOption) and e.ctx is not None:  # our suggestion, not click's (learning-rate: lr)
        from .._suggest import did_you_mean

        flags = [f for p in e.ctx.command.get_params(e.ctx) if isinstance(p, click.Option)
                 for f in (*p.opts, *p.secondary_opts)]  # distill: every method's flags too
        message = f"No such option {e.option_name!r}"
        found = did_you_mean(e.option_name, flags)
        if found:
            hint = f"; {found} (kdistill {where + ' ' if where else ''}--help lists them)"
    click.echo(f"error: {message}{hint}", err=True)
    sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kdistill")
@click.pass_context
def cli(ctx) -> None:
    """Dataset distillation with kernel ridge regression."""
    from .._precision import precision_scope

    # Kernel values in float64 for this command only (KRR is ill-conditioned at small reg); the
    # caller's JAX setting comes back when the command ends. `distill --precision` sets a run's own.
    ctx.with_resource(precision_scope("float64"))


for _command in (_listings.datasets, _listings.kernels, _files.download, _distill.distill, _listings.methods_cmd,
                 _evaluate.evaluate, _files.show, _files.demo, _files.report, _compare.compare, _export.export):
    cli.add_command(_command)
del _command


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings as one line each: ``warning: ...`` (not a file name and a source line)."""
    click.echo(f"warning: {_one_line(str(message))}", err=True)


_SIGNAL: dict[str, int] = {}


def _terminate(signum, frame):  # SIGTERM (kill, a scheduler's time limit) ends a run like Ctrl-C: cleanly
    _SIGNAL["number"] = signum
    raise KeyboardInterrupt


def main() -> None:
    import os
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = _show_warning
    try:
        rv = cli(prog_name="kdistill", standalone_mode=False)  # --help, --version: their exit code
        sys.stdout.flush()
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        code = 130
    except click.ClickException as e:  # outside a command (e.g. kdistill --bogus): _Group already printed most
        click.echo(f"error: {_one_line(e.format_message())}", err=True)
        code = 2
    except OSError as e:  # stdout itself failed (kdistill kernels > /dev/full, a closed pipe)
        from .._atomic import describe_os_error

        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        click.echo(f"error: cannot write the output ({_one_line(describe_os_error(e))})", err=True)
        code = 2
    else:
        code = rv if isinstance(rv, int) else 0
    sys.exit(code)
