from charlm.cli import entry

entry()
