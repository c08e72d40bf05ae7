"""``kdistill datasets``, ``kernels`` and ``methods``: what there is to choose from, as tables."""

from __future__ import annotations

import click

from ._common import _data_dir_option


@click.command()
@_data_dir_option
def datasets(data_dir):
    """List every dataset, whether it is available here, and from where."""
    from rich.console import Console
    from rich.table import Table

    from ..data import availability

    table = Table(title="datasets")
    for col in ("name", "available", "source / how to get it"):
        table.add_column(col)
    for st in availability(data_dir=data_dir):
        table.add_row(st.name, "yes" if st.available else "no",
                      st.source if st.available else f"{st.how_to_get} (looked in: {', '.join(st.looked_in)})")
    Console(width=160).print(table)


@click.command()
def kernels():
    """List every kernel family, its parameters and defaults (spec syntax: name:key=value,...)."""
    from rich.console import Console
    from rich.table import Table

    from ..kernels import families

    table = Table(title="kernels")
    for col in ("spec name", "parameters: default (type, range): meaning", "what it is"):
        table.add_column(col)
    for name, fam in sorted(families().items()):
        alias = name != fam.name
        params = "\n".join(p.describe(k) + (f": {p.doc}" if p.doc else "") for k, p in fam.params.items()) or "-"
        table.add_row(name, "alias of " + fam.name if alias else params, "" if alias else fam.doc)
    Console(width=max(Console().width, 140)).print(table)


@click.command(name="methods")
def methods_cmd():
    """List every distillation method, what it does and its options (types, defaults, ranges)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..methods import methods

    table = Table(title="methods (kdistill distill --method NAME; --method NAME --help for its options)")
    for col in ("method", "what it is", "options"):
        table.add_column(col)
    for name, m in sorted(methods().items()):
        opts = "\n".join(f"{o.cli_flag}: {o.describe()}" for o in m.options) or "-"
        own = [f"default --kernel {m.kernel}"] if m.kernel else []
        own += [f"default --precision {m.precision}"] if m.precision != "float64" else []
        table.add_row(escape(name), escape(" ".join([m.doc, *(f"({x})" for x in own)])), escape(opts))
    Console(width=max(Console().width, 160)).print(table)
