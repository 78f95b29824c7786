from prompttuner.cli import main

main()
