from charlm.cli.main import entry

entry()
