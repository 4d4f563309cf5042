"""What `toolkit bench` and `toolkit tune` print around a run (the typer commands in
toolkit/cli/main.py delegate here)."""

from __future__ import annotations

import logging

import typer

from toolkit.bench.loadgen import ProgressFactory
from toolkit.bench.main import run_bench
from toolkit.bench.report import markdown_table
from toolkit.bench.sweep import JobCheck, SweepError


def bench_command(overrides: list[str], multirun: bool,
                  progress: ProgressFactory | None = None,
                  check: JobCheck | None = None) -> None:
    """Run the benchmark or sweep; print the summary table and where the files went."""
    _log_jobs()
    try:
        run = run_bench(overrides, multirun, progress=progress, check=check)
    except SweepError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(markdown_table(run.results, run.axes))
    typer.echo(f"results: {run.output_dir}")


def tune_command(overrides: list[str], progress: ProgressFactory | None = None,
                 check: JobCheck | None = None) -> None:
    """Run the tuning sweep; print the table, the winner and the recipe written."""
    from toolkit.bench.tune import TuneError, run_tune

    _log_jobs()
    try:
        outcome = run_tune(overrides, progress=progress, check=check)
    except (TuneError, SweepError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(markdown_table(outcome.run.results, outcome.run.axes))
    typer.echo(f"best: {outcome.best.name} ({' '.join(outcome.best.overrides)})")
    for path in outcome.recipe_paths:
        typer.echo(f"recipe: {path}")


def _log_jobs() -> None:
    """The job lines (`job 2/4: max_num_seqs=16`) show over the warnings-only console."""
    logging.getLogger("toolkit.bench").setLevel(logging.INFO)
