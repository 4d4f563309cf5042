"""What `toolkit bench` and `toolkit tune` print around a run (the typer commands in
toolkit/cli/main.py delegate here)."""

from __future__ import annotations

import logging

import typer

from toolkit.bench.main import run_bench
from toolkit.bench.report import markdown_table


def bench_command(overrides: list[str], multirun: bool) -> None:
    """Run the benchmark or sweep; print the summary table and where the files went."""
    _setup_logging()
    run = run_bench(overrides, multirun)
    typer.echo(markdown_table(run.results, run.axes))
    typer.echo(f"results: {run.output_dir}")


def tune_command(overrides: list[str]) -> None:
    """Run the tuning sweep; print the table, the winner and the recipe written."""
    from toolkit.bench.tune import TuneError, run_tune

    _setup_logging()
    try:
        outcome = run_tune(overrides)
    except TuneError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(markdown_table(outcome.run.results, outcome.run.axes))
    typer.echo(f"best: {outcome.best.name} ({' '.join(outcome.best.overrides)})")
    for path in outcome.recipe_paths:
        typer.echo(f"recipe: {path}")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("toolkit.bench").setLevel(logging.INFO)
