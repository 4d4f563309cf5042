"""`python -m toolkit` runs the CLI."""

from toolkit.cli.main import app

app()
