"""`python -m tide` is the `tide` command."""

from tide.cli import app

app()
