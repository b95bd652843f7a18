"""`charlm data list` and `charlm data fetch`: the built-in corpora."""

from __future__ import annotations

from typing import Annotated

import typer

from charlm.cli import app as cli
from charlm.cli.table import print_whole, table_of


@cli.data_app.command("list", epilog="Example: charlm data list")
def data_list(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False) -> None:
    """Show the built-in corpora, their size, and whether each ships with charlm or downloads (and if so,
    whether it is in the cache folder)."""
    from charlm import data as data_mod

    folder = data_mod.data_dir()
    rows = [
        {
            "name": b.name,
            "description": b.description,
            "files": [r.filename for r in b.files],
            "bytes": sum(r.size for r in b.files),
            "source": "package" if b.shipped else "download",
            "cached": None if b.shipped else all(data_mod.is_cached(r, folder) for r in b.files),
        }
        for b in data_mod.BUILTINS.values()
    ]
    if as_json:
        cli.print_json({"cache": str(folder), "corpora": rows})
        return
    table = table_of(f"built-in corpora (download cache: {folder})", ("name", "description", "files", "MB", "source"))
    for row in rows:
        where = (
            "built in (ships with charlm)"
            if row["source"] == "package"
            else f"download, {'cached' if row['cached'] else 'not cached'}"
        )
        table.add_row(row["name"], row["description"], ", ".join(row["files"]), f"{row['bytes'] / 1e6:.2f}", where)
    print_whole(table)


@cli.data_app.command("fetch", epilog="Example: charlm data fetch ptb-char")
def data_fetch(name: Annotated[str, typer.Argument(help="A built-in corpus name (see charlm data list).")]) -> None:
    """Download a built-in corpus into the cache folder and verify its checksum (one that ships with charlm
    is only verified: there is nothing to download)."""
    from charlm import data as data_mod
    from charlm.ui.report import download_bar

    builtin = data_mod.BUILTINS.get(name)
    if builtin is not None and builtin.shipped:
        for remote in builtin.files:
            data_mod.read_packaged(remote)
            cli.out.print(f"{data_mod.packaged_file(remote)} ok (ships with charlm: nothing to download)")
        return
    for path in data_mod.fetch(name, progress=lambda f, total: download_bar(cli.out, f, total)):
        cli.out.print(f"{path} ok")
