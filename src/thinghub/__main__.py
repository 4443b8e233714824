"""`python -m thinghub` runs the CLI."""

from thinghub.cli import main

main()
