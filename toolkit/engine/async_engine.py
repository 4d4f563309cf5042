"""The asyncio facade: the engine core runs in its own thread; each request is a stream.

The model's forward pass releases the GIL, so the event loop keeps accepting requests and
streaming tokens while a step runs. Requests, aborts and embedding jobs reach the engine
thread through a queue and take effect between steps; an embedding job runs one batch of
its inputs (at most a step's token budget) between two steps, so it never runs beside a
step and never holds generation up for longer than about one step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from toolkit.engine.core import EngineCore
from toolkit.protocol import GuidedSpec, RequestOutput, SamplingParams
from toolkit.protocol.errors import EngineDeadError, EngineOverloadedError
from toolkit.protocol.multimodal import MultiModalInput
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
    multimodal: MultiModalInput | None = None
    """The prompt's images (vision-language models)."""


@dataclass(frozen=True)
class _Abort:
    request_id: str


@dataclass(frozen=True)
class _Fatal:
    """Stop the loop as if a step had raised (a lost tensor-parallel worker)."""

    reason: str


@dataclass
class _Embed:
    """An embedding job: its prompts, pooling, and the future its vectors resolve."""

    prompts: list[list[int]]
    pooling: str
    normalize: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    vectors: list[list[float]] = field(default_factory=list)
    """The vectors of the prompts embedded so far, in order."""


class AsyncEngine:
    """What the API talks to. ``generate`` yields RequestOutput deltas; leaving the
    iteration early (client gone, cancellation) aborts the request and frees its pages."""

    def __init__(self, core: EngineCore, tokenizer: Tokenizer, model_name: str,
                 max_model_len: int, num_threads: int | None = None,
                 deterministic: bool = False) -> None:
        self.core = core
        self.deterministic = deterministic
        """The runtime is batch-invariant (ResolvedConfig.deterministic); /version says so."""
        self.num_threads = num_threads
        """torch intra-op threads of the loop thread (CPU); None leaves torch's default."""
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.healthy = True
        self._commands: queue.SimpleQueue[_Add | _Abort | _Embed | _Fatal | None] = (
            queue.SimpleQueue())
        self._embed_jobs: deque[_Embed] = deque()
        """Embedding jobs in arrival order; the loop runs one batch of the first per turn."""
        self._embedder = None
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        """Each generating request's event loop and the queue its deltas (or the exception
        that refused it) are put on."""
        self._thread: threading.Thread | None = None
        self._on_fatal: Callable[[], None] | None = None

    def start(self, on_fatal: Callable[[], None] | None = None) -> None:
        """Run the engine loop in its own thread; ``on_fatal`` is called if the loop dies
        (the server uses it to shut down and exit non-zero, so a supervisor restarts it).
        Also starts a grammar compile worker in the background, so that the first guided
        request does not wait for one."""
        self._on_fatal = on_fatal
        if self.core.guided is not None:
            self.core.guided.warm()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def fail(self, reason: str) -> None:
        """Stop the engine from another thread: the loop dies with ``reason`` (pending
        requests get an EngineDeadError, ``on_fatal`` runs)."""
        self._commands.put(_Fatal(reason))

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
            "kv_cache_usage": scheduler.page_manager.usage,
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
                       params: SamplingParams, priority: int = 0,
                       multimodal: MultiModalInput | None = None
                       ) -> AsyncIterator[RequestOutput]:
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        grammar = await self._compile(params.guided)
        stream: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), stream)
        if not self.healthy:  # checked after registering: a dying loop fails registered streams
            self._streams.pop(request_id)
            raise RuntimeError("the engine is not running")
        self._commands.put(_Add(request_id, list(prompt_token_ids), params, priority, grammar,
                                multimodal=multimodal))
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

    async def embed(self, prompts: list[list[int]], pooling: str = "last",
                    normalize: bool = True) -> list[list[float]]:
        """One vector per prompt: the served model's final-normed hidden states pooled
        (``last`` token or ``mean``), L2-normalized when ``normalize``. Runs on the engine
        thread between steps; cancelling the caller drops the rest of the job. Raises
        ValueError for an empty prompt or an unknown pooling."""
        if not self.healthy or self._thread is None:
            raise RuntimeError("the engine is not running")
        loop = asyncio.get_running_loop()
        job = _Embed([list(p) for p in prompts], pooling, normalize, loop, loop.create_future())
        self._commands.put(job)
        return await job.future

    def _run(self) -> None:
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            while self._drain_commands(block=not (self.core.has_unfinished
                                                  or self._embed_jobs)):
                self._embed_batch()
                for output in self.core.step():
                    self._publish(output)
        except Exception as exc:
            logger.exception("the engine loop died")
            self.healthy = False
            self._fail_all(f"the engine stopped ({exc}); see the server log")
            self._fail_embed_jobs("the engine loop died")
            if self._on_fatal is not None:
                self._on_fatal()
        else:
            self._fail_embed_jobs("the engine shut down")

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
            if isinstance(command, _Fatal):
                raise RuntimeError(command.reason)
            if isinstance(command, _Abort):
                self.core.abort_request(command.request_id)
                # a stream still listening (an abort from elsewhere, e.g. Kobold's
                # /api/extra/abort) ends with reason "abort"
                self._publish(RequestOutput(command.request_id, [], "", "abort"))
                continue
            if isinstance(command, _Embed):
                self._embed_jobs.append(command)
                continue
            self._add(command)

    def _embed_batch(self) -> None:
        """Embed the next batch of the first job's prompts: as many as fit in the
        scheduler's per-step token budget (at least one); resolve the job when done.
        A failure fails only that job."""
        if not self._embed_jobs:
            return
        job = self._embed_jobs[0]
        if job.future.cancelled():
            self._embed_jobs.popleft()
            return
        start = len(job.vectors)
        end = _batch_end(job.prompts, start, self.core.scheduler.config.max_num_batched_tokens)
        try:
            job.vectors.extend(self._get_embedder().embed(job.prompts[start:end], job.pooling,
                                                          job.normalize))
        except ValueError as exc:
            self._embed_jobs.popleft()
            _resolve(job, exc)
            return
        except Exception:
            logger.exception("an embedding job failed")
            self._embed_jobs.popleft()
            _resolve(job, RuntimeError("the embedding forward failed"))
            return
        if len(job.vectors) == len(job.prompts):
            self._embed_jobs.popleft()
            _resolve(job, job.vectors)

    def _get_embedder(self):
        if self._embedder is None:
            from toolkit.runner.embedder import Embedder

            runner = self.core.runner
            if runner.workers is not None:
                raise ValueError("embeddings are not served with tensor parallelism "
                                 "(parallel.tensor_parallel_size > 1)")
            self._embedder = Embedder(runner.model, runner.attention, runner.page_size,
                                      runner.device)
        return self._embedder

    def _fail_embed_jobs(self, reason: str) -> None:
        """Fail every queued embedding job (the loop is gone)."""
        while True:
            try:
                command = self._commands.get(block=False)
            except queue.Empty:
                break
            if isinstance(command, _Embed):
                self._embed_jobs.append(command)
        while self._embed_jobs:
            _resolve(self._embed_jobs.popleft(), RuntimeError(reason))

    def _add(self, command: _Add) -> None:
        """Admit one request; a refusal or a failure reaches only that request's stream."""
        try:
            self.core.add_request(command.request_id, command.prompt_token_ids,
                                  command.params, command.priority, command.grammar,
                                  multimodal=command.multimodal)
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
            self._send(request_id, EngineDeadError(message))


def _batch_end(prompts: list[list[int]], start: int, max_num_tokens: int) -> int:
    """One past the last prompt from ``start`` whose tokens, with the ones before it,
    stay within ``max_num_tokens`` (always at least one prompt)."""
    end, num_tokens = start + 1, len(prompts[start])
    while end < len(prompts) and num_tokens + len(prompts[end]) <= max_num_tokens:
        num_tokens += len(prompts[end])
        end += 1
    return end


def _resolve(job: _Embed, result: list[list[float]] | Exception) -> None:
    """Hand ``result`` (vectors or the error) to the job's future on its event loop."""

    def settle() -> None:
        if job.future.done():
            return
        if isinstance(result, Exception):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting
        pass
