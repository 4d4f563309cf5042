"""The CLI's console: log lines on stderr, and start-up waits as a rich spinner.

Waits that can take seconds (a GGUF conversion, the native kernel build, the weights,
CUDA graph capture) are logged by ``toolkit.runtime.waiting`` on the ``toolkit.wait``
logger, with ``extra={"wait": "start" | "end"}``. When stderr is a terminal, a spinner
names the wait while it runs (at any log level: it leaves nothing behind) and the end line
("loaded the weights in 3.2 s") is printed as a log line when the level shows INFO. When
stderr is not a terminal (a log file, a pipe, CI), both are plain log lines and nothing
else is written, so logs stay clean.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WAIT_LOGGER = "toolkit.wait"


def setup_logging(level: str, stream=None) -> None:
    """Log at ``level`` (trace is debug) to ``stream`` (stderr); on a terminal through
    rich, with the wait spinner."""
    stream = stream if stream is not None else sys.stderr
    numeric = logging.DEBUG if level == "trace" else getattr(logging, level.upper())
    if not _is_terminal(stream):
        logging.basicConfig(level=numeric, format=LOG_FORMAT, stream=stream)
        return
    from rich.console import Console

    global _console
    console = _console = Console(file=stream)
    root = logging.getLogger()
    root.setLevel(numeric)
    root.handlers[:] = [ConsoleLines(console)]
    waits = logging.getLogger(WAIT_LOGGER)
    waits.setLevel(logging.INFO)
    waits.propagate = False
    waits.handlers[:] = [WaitSpinner(console, show_lines=numeric <= logging.INFO)]


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ConsoleLines(logging.Handler):
    """Log records as plain lines through the rich console (printed above a running
    spinner instead of through it)."""

    def __init__(self, console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False,
                               soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class WaitSpinner(ConsoleLines):
    """``toolkit.wait`` records: a spinner from a start record to its end record, then
    the end line (when ``show_lines``)."""

    def __init__(self, console, show_lines: bool) -> None:
        super().__init__(console)
        self.show_lines = show_lines
        self.status = None

    def emit(self, record: logging.LogRecord) -> None:
        phase = getattr(record, "wait", None)
        self._stop()
        if phase == "start":
            self.status = self.console.status(record.getMessage(), spinner="dots")
            self.status.start()
        elif self.show_lines:
            super().emit(record)

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


_console = None
"""The rich console setup_logging made for a terminal, shared with the progress bars so
log lines print above them."""


def request_bars(console=None):
    """A bench ProgressFactory (toolkit.bench.loadgen): each job's requests as a rich bar
    (label, done/total, elapsed) that is left at its final count when the job ends. On a
    stream that is not a terminal nothing is drawn."""
    import contextlib

    @contextlib.contextmanager
    def request_bar(label: str, total: int | None):
        shown = console if console is not None else _console
        if shown is None or not shown.is_terminal:
            yield lambda: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("requests"), TimeElapsedColumn())
        with Progress(*columns, console=shown) as bar:
            task = bar.add_task(label, total=total)
            yield lambda: bar.advance(task)

    return request_bar
