"""`charlm doctor`: versions, devices, the processor's bf16 units, folders and a matmul check."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from charlm.cli import app as cli
from charlm.cli.table import print_whole


@cli.app.command(epilog="Example: charlm doctor --json > doctor.json  (attach it to a bug report)")
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for bug reports).")] = False,
    matmul: Annotated[bool, typer.Option(help="Time a matmul in fp32 and bf16 (about 2 s).")] = True,
) -> int:
    """Why is it slow or broken here: versions, CPU and GPUs, what train.precision=auto picks, folders, speed.
    Exits 1 when it finds a problem (each listed with its fix)."""
    from charlm.ui.doctor import diagnose

    report = diagnose(matmul=matmul)
    if as_json:
        cli.print_json(report.as_dict())
    else:
        for title, facts in report.sections.items():
            table = Table(title=title, show_header=False, title_justify="left")
            table.add_column(overflow="fold")
            table.add_column(overflow="fold")
            for name, value in facts.items():
                table.add_row(name, _shown(value))
            print_whole(table)
        for problem in report.problems:
            cli.err.print(f"problem: {problem}", markup=False)
        if not report.problems:
            cli.out.print("no problems found")
    return 1 if report.problems else 0


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) or "none"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return "n/a" if value is None else str(value)
