"""The asyncio facade: the engine core runs in its own thread; each request is a stream.

The model's forward pass releases the GIL, so the event loop keeps accepting requests and
streaming tokens while a step runs. Requests and aborts reach the engine thread through a
queue and take effect between steps.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from toolkit.engine.core import EngineCore
from toolkit.protocol import GuidedSpec, RequestOutput, SamplingParams
from toolkit.protocol.errors import EngineOverloadedError
from toolkit.tokenizer.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = 0
    grammar: Any = None
    """The compiled grammar of a guided request."""


@dataclass(frozen=True)
class _Abort:
    request_id: str


class AsyncEngine:
    """What the API talks to. ``generate`` yields RequestOutput deltas; leaving the
    iteration early (client gone, cancellation) aborts the request and frees its pages."""

    def __init__(self, core: EngineCore, tokenizer: Tokenizer, model_name: str,
                 max_model_len: int) -> None:
        self.core = core
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.healthy = True
        self._commands: queue.SimpleQueue[_Add | _Abort | None] = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        """Each generating request's event loop and the queue its deltas (or the exception
        that refused it) are put on."""
        self._thread: threading.Thread | None = None
        self._on_fatal: Callable[[], None] | None = None

    def start(self, on_fatal: Callable[[], None] | None = None) -> None:
        """Run the engine loop in its own thread; ``on_fatal`` is called if the loop dies
        (the server uses it to shut down and exit non-zero, so a supervisor restarts it)."""
        self._on_fatal = on_fatal
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        if self._thread is not None:
            self._commands.put(None)
            self._thread.join()
            self._thread = None

    @property
    def supports_priority(self) -> bool:
        """True when the scheduler orders waiting requests by their priority."""
        return self.core.scheduler.config.policy == "priority"

    @property
    def metrics(self):
        """The engine's counters and latency histograms (``EngineMetrics``)."""
        return self.core.metrics

    def stats(self) -> dict:
        scheduler = self.core.scheduler
        return {
            "num_running": len(scheduler.running),
            "num_waiting": len(scheduler.waiting),
            "kv_cache_usage": scheduler.block_manager.usage,
            "healthy": self.healthy,
            "num_streams": len(self._streams),
            **{f"num_states_{k}": v for k, v in self.core.num_request_states().items()},
        }

    async def validate_guided(self, spec: GuidedSpec) -> None:
        """Compile ``spec`` in a worker thread (warming the grammar cache); raises
        ``GuidedSpecError`` (a ValueError with ``param``) when it does not compile."""
        await self._compile(spec)

    async def _compile(self, spec: GuidedSpec | None) -> Any:
        if spec is None:
            return None
        if self.core.guided is None:
            raise ValueError("guided decoding is not available in this engine")
        return await asyncio.to_thread(self.core.guided.compile, spec)

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: SamplingParams, priority: int = 0
                       ) -> AsyncIterator[RequestOutput]:
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        grammar = await self._compile(params.guided)
        stream: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), stream)
        if not self.healthy:  # checked after registering: a dying loop fails registered streams
            self._streams.pop(request_id)
            raise RuntimeError("the engine is not running")
        self._commands.put(_Add(request_id, list(prompt_token_ids), params, priority, grammar))
        finished = False
        try:
            while not finished:
                output = await stream.get()
                if isinstance(output, Exception):
                    finished = True
                    raise output
                finished = output.finished
                yield output
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def _run(self) -> None:
        try:
            while self._drain_commands(block=not self.core.has_unfinished):
                for output in self.core.step():
                    self._publish(output)
        except Exception:
            logger.exception("the engine loop died")
            self.healthy = False
            self._fail_all("the engine loop died; see the server log")
            if self._on_fatal is not None:
                self._on_fatal()

    def _drain_commands(self, block: bool) -> bool:
        """Apply queued adds and aborts; False on shutdown."""
        while True:
            try:
                command = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            if command is None:
                return False
            if isinstance(command, _Abort):
                self.core.abort_request(command.request_id)
                continue
            self._add(command)

    def _add(self, command: _Add) -> None:
        """Admit one request; a refusal or a failure reaches only that request's stream."""
        try:
            self.core.add_request(command.request_id, command.prompt_token_ids,
                                  command.params, command.priority, command.grammar)
        except EngineOverloadedError as exc:
            self._send(command.request_id, exc)
        except ValueError as exc:
            self._publish(RequestOutput(command.request_id, [], "", "abort", error=str(exc)))
        except Exception:
            logger.exception("admitting request %s failed", command.request_id)
            self._publish(RequestOutput(command.request_id, [], "", "abort",
                                        error="admitting the request failed"))

    def _publish(self, output: RequestOutput) -> None:
        self._send(output.request_id, output)

    def _send(self, request_id: str, item: RequestOutput | Exception) -> None:
        target = self._streams.get(request_id)
        if target is not None:
            loop, stream = target
            try:
                loop.call_soon_threadsafe(stream.put_nowait, item)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                pass

    def _fail_all(self, message: str) -> None:
        for request_id in list(self._streams):
            self._publish(RequestOutput(request_id, [], "", "abort", error=message))
