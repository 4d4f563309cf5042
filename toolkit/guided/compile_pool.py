"""Grammar compilation in worker processes, under a time limit (ReDoS / state blow-up guard).

A compile in a thread cannot be stopped, so each one runs in a worker process that is
killed when it overruns; the compiled grammar comes back serialized. Workers fork from a
forkserver that has imported xgrammar once, so starting (or replacing) one is quick and
never forks the multithreaded server itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import re
import threading
from multiprocessing.connection import Connection
from typing import Any

import xgrammar as xgr

from toolkit.guided.errors import GuidedSpecError
from toolkit.guided.grammars import compile_spec
from toolkit.guided.whitespace import WhitespacePatternError
from toolkit.protocol.guided import GuidedSpec

logger = logging.getLogger(__name__)

WORKER_CACHE_BYTES = 64 << 20
"""Each worker's own xgrammar cache (repeats are served by the parent's cache first)."""


class CompileTimeout(TimeoutError):
    """The compile overran its time limit; its worker was killed."""


class CompilePool:
    """Up to ``max_workers`` compile processes, started on demand and reused.

    Thread-safe: each caller takes an idle worker (or starts one, or waits for one).
    """

    def __init__(self, info: xgr.TokenizerInfo, max_workers: int = 2,
                 max_threads: int = 1) -> None:
        self._info_json = info.serialize_json()
        self._max_threads = max_threads
        self._max_workers = max_workers
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._num_workers = 0
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__])

    def compile(self, spec: GuidedSpec, timeout_s: float | None) -> str:
        """The serialized ``CompiledGrammar`` of ``spec``; ``GuidedSpecError`` when it does
        not compile, ``CompileTimeout`` after ``timeout_s`` seconds of compiling."""
        worker = self._take()
        try:
            status, param, payload = worker.run(spec, timeout_s)
        except BaseException as exc:  # overran, crashed or interrupted: never reuse it
            self._retire(worker)
            if isinstance(exc, EOFError):
                raise GuidedSpecError(spec.param, f"{spec.param} crashed the grammar "
                                   "compiler") from None
            raise
        self._idle.put(worker)
        if status == "error":
            raise GuidedSpecError(param, payload)
        return payload

    def warm(self) -> None:
        """Start one worker in the background, so the first compile does not wait for
        the forkserver's imports. Not a daemon thread: an exit while the worker is being
        spawned waits for it rather than cutting the forkserver's pickle short."""
        threading.Thread(target=self._warm, name="guided-warm").start()

    def close(self) -> None:
        """Stop the idle workers."""
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return

    def _warm(self) -> None:
        try:
            self._idle.put(self._take())
        except Exception:  # a failed warm-up only means the first compile starts one
            logger.exception("starting a grammar compile worker failed")

    def _take(self) -> _Worker:
        """An idle worker, a new one while fewer than max_workers run, or the next one
        to come back."""
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                start = self._num_workers < self._max_workers
                self._num_workers += start
            if start:
                try:
                    return _Worker(self._context, self._info_json, self._max_threads)
                except BaseException:
                    with self._lock:
                        self._num_workers -= 1
                    raise
            try:  # all busy: wait for one (re-checking, as a retired one frees a slot)
                return self._idle.get(timeout=0.05)
            except queue.Empty:
                pass

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._num_workers -= 1


class _Worker:
    """One compile process and the parent's end of its pipe."""

    def __init__(self, context, info_json: str, max_threads: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, info_json, max_threads),
                                       name="guided-compile", daemon=True)
        self.process.start()
        child.close()
        self.conn.recv()  # "ready": imports and the tokenizer info are not timed

    def run(self, spec: GuidedSpec, timeout_s: float | None) -> tuple[str, str, str]:
        """The worker's reply; ``CompileTimeout`` when none comes within ``timeout_s``,
        EOFError when the process died."""
        self.conn.send(spec)
        if not self.conn.poll(timeout_s):
            raise CompileTimeout(f"{spec.param} did not compile within {timeout_s:g} s")
        return self.conn.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


def _serve(conn: Connection, info_json: str, max_threads: int) -> None:
    """Worker loop: a spec in, ("ok", param, serialized grammar) or ("error", param,
    message) out; None (or the parent's end closing) stops it."""
    info = xgr.TokenizerInfo.deserialize_json(info_json)
    compiler = xgr.GrammarCompiler(info, max_threads=max_threads, cache_enabled=True,
                                   cache_limit_bytes=WORKER_CACHE_BYTES)
    conn.send(("ready", "", ""))
    try:
        while (spec := conn.recv()) is not None:
            conn.send(_compile(compiler, spec))
    except (EOFError, BrokenPipeError):  # the server went away
        return


def _compile(compiler: xgr.GrammarCompiler, spec: GuidedSpec) -> tuple[str, str, Any]:
    try:
        return "ok", spec.param, compile_spec(compiler, spec).serialize_json()
    except WhitespacePatternError as exc:
        return "error", "guided_whitespace_pattern", f"guided_whitespace_pattern: {exc}"
    except (RuntimeError, ValueError, TypeError) as exc:
        return "error", spec.param, f"{spec.param} is not valid: {first_line(exc)}"


def first_line(exc: Exception) -> str:
    """xgrammar's message without its source location prefix and trailing lines."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text)
