"""Tables printed whole, for `runs`, `info` and `doctor`."""

from __future__ import annotations

from rich.table import Table

from charlm.cli import app as cli

NUMBERS = {"epochs", "best ppl", "best bpc", "time", "MB"}


def table_of(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose cells wrap inside their column instead of being cut with an ellipsis."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in NUMBERS else "left", overflow="fold")
    return table


def print_whole(table: Table) -> None:
    """Print a table whole: at the terminal's width on a terminal, at its own width in a pipe or a log."""
    from rich.console import Console
    from rich.measure import Measurement

    if cli.out.is_terminal:
        cli.out.print(table)
        return
    natural = Measurement.get(cli.out, cli.out.options.update_width(100_000), table).maximum
    Console(file=cli.out.file, width=max(natural, cli.out.width), highlight=False).print(table)
