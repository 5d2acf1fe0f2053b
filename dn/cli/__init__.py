"""The `dn` command line: thin Typer shells over the library."""
