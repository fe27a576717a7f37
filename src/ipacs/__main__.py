"""`python -m ipacs`: the same program as the `ipacs` command."""

from ipacs.cli import main

main()
