"""The command line: the Typer app (a leaf), one module per command named after it, the entry point."""
