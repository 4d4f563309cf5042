"""The `toolkit` command line (typer)."""
