from dn.cli.main import main

main()
