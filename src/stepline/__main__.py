from .cli._entry import main

main()
