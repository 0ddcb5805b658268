"""`python -m vsegcli ...` (and `torchrun -m vsegcli ...`): the same as the `vseg` command."""
from vsegcli.cli import main

if __name__ == "__main__":
    main()
