"""The single binary's entry point: the same `dn` command the package installs."""

from dn.cli.main import main

if __name__ == "__main__":
    main()
