"""The KoboldAI API (Aphrodite's ``--launch-kobold-api``), served when server.kobold_api.

Kobold parameters map onto SamplingParams as Aphrodite maps them: rep_pen ->
repetition_penalty, typical -> typical_p, eps_cutoff -> epsilon_cutoff, stop_sequence ->
stop, max_length -> max_tokens, sampler_seed -> seed; top_k 0 disables top-k; a
temperature below 1e-5 is greedy with n = 1. The prompt keeps its last
max_context_length - max_length tokens. Errors keep the OpenAI shape, naming the Kobold
parameter. /api/extra/generate/check and /api/extra/abort find a running
/api/v1/generate by its genkey.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

from blacksheep import Request, Response
from blacksheep.server.sse import ServerSentEvent, ServerSentEventsResponse

from toolkit.api.context import ServingContext
from toolkit.api.http.body import parse_body
from toolkit.api.http.deadline import Deadline
from toolkit.api.http.disconnect import client_gone, unless_disconnected
from toolkit.api.http.errors import APIError
from toolkit.api.http.render import json_response
from toolkit.api.kobold.protocol import (
    PARAM_NAMES,
    SAMPLING_EPS,
    KoboldGenerateRequest,
    KoboldTokenCountRequest,
)
from toolkit.api.openai.generation import Job, merge_outputs, prefetched
from toolkit.api.openai.responses import new_id
from toolkit.api.openai.sampling import choice_params
from toolkit.api.openai.serving_base import check_healthy
from toolkit.api.openai.validation import check_max_n, invalid
from toolkit.protocol import SamplingParams

Handler = Callable[[Request], Awaitable[Response]]

KAI_VERSION = "1.2.4"
"""The KoboldAI API version Aphrodite reports."""
KOBOLDCPP_VERSION = "1.63"
"""The KoboldCpp version Aphrodite impersonates on /api/extra/version."""


class KoboldServing:
    """Generate, stream, count tokens, and describe the model, in Kobold's shapes."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx
        self._default_bad_words: tuple[tuple[int, ...], ...] | None = None
        self._active: dict[str, tuple[list[Job], list[str]]] = {}
        """genkey -> (jobs, text so far per job) of each running /api/v1/generate."""

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every Kobold route."""
        return [
            ("POST", "/api/v1/generate", self.generate),
            ("POST", "/api/extra/generate/stream", self.generate_stream),
            ("POST", "/api/extra/generate/check", self.check),
            ("GET", "/api/extra/generate/check", self.check),
            ("POST", "/api/extra/abort", self.abort),
            ("POST", "/api/extra/tokencount", self.token_count),
            ("GET", "/api/v1/model", self.model),
            ("GET", "/api/v1/info/version", self.info_version),
            ("GET", "/api/extra/version", self.extra_version),
            ("GET", "/api/v1/config/max_length", self.max_length),
            ("GET", "/api/v1/config/max_context_length", self.max_context_length),
            ("GET", "/api/extra/true_max_context_length", self.max_context_length),
        ]

    async def generate(self, request: Request) -> Response:
        """``{"results": [{"text": ...}, ...]}``, one text per n."""
        body = await parse_body(request, KoboldGenerateRequest)
        jobs = self._jobs(body)
        deadline = Deadline.after(self.ctx.request_timeout)
        texts = await unless_disconnected(request, deadline.run(self._run(body.genkey, jobs)))
        return json_response({"results": [{"text": text} for text in texts]})

    async def check(self, request: Request) -> Response:
        """The text generated so far for ``genkey`` ("" when unknown or finished)."""
        genkey = await _genkey(request)
        _, texts = self._active.get(genkey, ((), [""]))
        return json_response({"results": [{"text": texts[0]}]})

    async def abort(self, request: Request) -> Response:
        """Stop the generation of ``genkey``; it answers with the text so far."""
        jobs, _ = self._active.get(await _genkey(request), ((), []))
        for job in jobs:
            self.ctx.engine.abort(job.request_id)
        return json_response({})

    async def _run(self, genkey: str | None, jobs: list[Job]) -> list[str]:
        """Every job's text, kept visible to /check under ``genkey`` while it runs."""
        texts = [""] * len(jobs)
        key = genkey or jobs[0].request_id
        self._active[key] = (jobs, texts)
        stream = merge_outputs(self.ctx.engine, jobs)
        try:
            async for index, output in stream:
                texts[index] += output.new_text
        finally:
            await stream.aclose()
            self._active.pop(key, None)
        return texts

    async def generate_stream(self, request: Request) -> Response:
        """Server-sent ``event: message`` / ``data: {"token": <new text>}`` per delta."""
        body = await parse_body(request, KoboldGenerateRequest)
        if body.n != 1 and body.temperature >= SAMPLING_EPS:
            raise invalid("n", "the Kobold stream carries one text: n must be 1")
        jobs = self._jobs(body)
        deadline = Deadline.after(self.ctx.request_timeout)
        first = prefetched(deadline.stream(merge_outputs(self.ctx.engine, jobs)))
        stream = await unless_disconnected(request, first)

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                async for _, output in stream:
                    if await client_gone(request):
                        return
                    yield ServerSentEvent({"token": output.new_text}, event="message")
            except APIError as exc:
                yield ServerSentEvent(exc.body(), event="error")
            finally:
                await stream.aclose()

        return ServerSentEventsResponse(events)

    async def token_count(self, request: Request) -> Response:
        """``{"value": <count>, "ids": [...]}`` (KoboldCpp's shape)."""
        body = await parse_body(request, KoboldTokenCountRequest)
        ids = self.ctx.engine.tokenizer.encode(body.prompt)
        return json_response({"value": len(ids), "ids": ids})

    async def model(self, request: Request) -> Response:
        return json_response({"result": f"toolkit/{self.ctx.model_name}"})

    async def info_version(self, request: Request) -> Response:
        return json_response({"result": KAI_VERSION})

    async def extra_version(self, request: Request) -> Response:
        return json_response({"result": "KoboldCpp", "version": KOBOLDCPP_VERSION})

    async def max_length(self, request: Request) -> Response:
        return json_response({"value": self.ctx.kobold_max_length})

    async def max_context_length(self, request: Request) -> Response:
        return json_response({"value": self.ctx.engine.max_model_len})

    def _jobs(self, body: KoboldGenerateRequest) -> list[Job]:
        """Checks, the truncated prompt, and one engine job per text."""
        check_healthy(self.ctx)
        context = min(body.max_context_length, self.ctx.engine.max_model_len)
        if body.max_length >= context:
            raise invalid("max_length", f"max_length ({body.max_length}) must be less than "
                          f"the context length ({context})")
        check_max_n("n", body.n, self.ctx.max_n)
        ids = self.ctx.engine.tokenizer.encode(body.prompt)[-(context - body.max_length):]
        if not ids:
            raise invalid("prompt", "The prompt has no tokens")
        params = self._params(body)
        num = 1 if params.greedy else body.n
        if body.genkey in self._active:
            raise invalid("genkey", f"genkey {body.genkey!r} is already generating")
        request_id = body.genkey or new_id("kai")
        return [Job(i, f"{request_id}-{i}", ids, choice)
                for i, choice in enumerate(choice_params(params, num))]

    def _params(self, body: KoboldGenerateRequest) -> SamplingParams:
        greedy = body.temperature < SAMPLING_EPS
        try:
            return SamplingParams(
                max_tokens=body.max_length, temperature=0.0 if greedy else body.temperature,
                top_p=1.0 if greedy else body.top_p,
                top_k=-1 if greedy or body.top_k == 0 else body.top_k,
                top_a=body.top_a, min_p=body.min_p, tfs=max(SAMPLING_EPS, body.tfs),
                typical_p=body.typical, eta_cutoff=body.eta_cutoff,
                epsilon_cutoff=body.eps_cutoff, smoothing_factor=body.smoothing_factor,
                smoothing_curve=body.smoothing_curve, repetition_penalty=body.rep_pen,
                stop=tuple(body.stop_sequence or ()),
                include_stop_str_in_output=body.include_stop_str_in_output,
                seed=body.sampler_seed,
                bad_words_token_ids=(self._bad_words() if body.use_default_badwordsids
                                     else ()))
        except ValueError as exc:
            name = str(exc).split("=", 1)[0].split(" ", 1)[0]
            raise invalid(PARAM_NAMES.get(name, name), str(exc)) from None

    def _bad_words(self) -> tuple[tuple[int, ...], ...]:
        """EOS and every token whose text has '[' or ']' (Aphrodite's default bad words
        ids), as one-token bad words; computed once."""
        if self._default_bad_words is None:
            tokenizer = self.ctx.engine.tokenizer
            tokens = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
            banned = {i for i, t in enumerate(tokens) if "[" in t or "]" in t}
            banned.update(tokenizer.eos_token_ids)
            self._default_bad_words = tuple((i,) for i in sorted(banned))
        return self._default_bad_words



async def _genkey(request: Request) -> str:
    """The ``genkey`` of a JSON body, "" when there is none (Kobold's lenient reading)."""
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        return ""
    genkey = data.get("genkey") if isinstance(data, dict) else None
    return genkey if isinstance(genkey, str) else ""
