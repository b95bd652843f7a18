"""The commands of `charlm`, one module per group; cli.py makes the app and registers them."""
