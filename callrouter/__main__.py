from callrouter.cli.main import main

main()
