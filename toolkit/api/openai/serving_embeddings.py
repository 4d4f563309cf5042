"""``POST /v1/embeddings``: the served model's pooled hidden states (vLLM's embed task).

Each input's vector is the final-normed hidden state of its last token (or the mean over
its tokens: server.embedding.pooling), L2-normalized (server.embedding.normalize), as
vLLM does for decoder-only models. The engine computes them between generation steps.
"""

from __future__ import annotations

import base64
import struct

from blacksheep import Request, Response

from toolkit.api.context import ServingContext
from toolkit.api.http.body import parse_body
from toolkit.api.http.deadline import Deadline
from toolkit.api.http.disconnect import unless_disconnected
from toolkit.api.http.errors import APIError, engine_failure
from toolkit.api.http.render import json_response
from toolkit.api.openai.prompts import encode_prompts, truncate_prompt
from toolkit.api.openai.protocol_embeddings import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from toolkit.api.openai.responses import new_id, now
from toolkit.api.openai.serving_base import check_healthy, check_model
from toolkit.api.openai.serving_lora import adapter_key
from toolkit.api.openai.validation import invalid


class EmbeddingServing:
    """Embeddings of strings or token ids."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    async def handle(self, request: Request) -> Response:
        """Validate, tokenize, embed on the engine (within server.request_timeout), answer
        floats or base64."""
        deadline = Deadline.after(self.ctx.request_timeout)
        body = await parse_body(request, EmbeddingRequest)
        check_model(self.ctx, body.model)
        if adapter_key(self.ctx, body.model) is not None:
            raise APIError("Embeddings are computed by the base model; LoRA adapters are not "
                           "supported here", param="model", code="invalid_value")
        _check(body)
        check_healthy(self.ctx)
        prompts = self.prompt_ids(body)
        vectors = await unless_disconnected(request, deadline.run(self._embed(prompts)))
        _check_dimensions(body.dimensions, len(vectors[0]))
        data = [EmbeddingData(index=i, embedding=_encode(v, body.encoding_format))
                for i, v in enumerate(vectors)]
        num_tokens = sum(len(p) for p in prompts)
        return json_response(EmbeddingResponse(
            id=new_id("embd"), created=now(), model=self.ctx.response_model(body.model), data=data,
            usage=EmbeddingUsage(prompt_tokens=num_tokens, total_tokens=num_tokens)))

    def prompt_ids(self, body: EmbeddingRequest) -> list[list[int]]:
        """Token ids of each input, truncated as asked; longer than the context is a 400."""
        tokenizer = self.ctx.engine.tokenizer
        prompts = [truncate_prompt(ids, body.truncate_prompt_tokens)
                   for ids in encode_prompts(tokenizer, body.inputs(), body.add_special_tokens,
                                             "input")]
        max_model_len = self.ctx.engine.max_model_len
        for i, ids in enumerate(prompts):
            if len(ids) > max_model_len:
                raise APIError(
                    f"This model's maximum context length is {max_model_len} tokens. However, "
                    f"input {i} has {len(ids)} tokens. Please reduce the length of the input.",
                    param="input", code="context_length_exceeded")
        return prompts

    async def _embed(self, prompts: list[list[int]]) -> list[list[float]]:
        try:
            return await self.ctx.engine.embed(prompts, self.ctx.embedding.pooling,
                                                 self.ctx.embedding.normalize)
        except ValueError as exc:
            raise APIError(str(exc), param="input", code="invalid_value") from None
        except RuntimeError as exc:
            raise engine_failure(exc) from None


def _check(body: EmbeddingRequest) -> None:
    if body.dimensions is not None and body.dimensions < 1:
        raise invalid("dimensions", "dimensions must be >= 1")
    if body.truncate_prompt_tokens is not None and body.truncate_prompt_tokens < 1:
        raise invalid("truncate_prompt_tokens", "truncate_prompt_tokens must be >= 1")


def _check_dimensions(dimensions: int | None, width: int) -> None:
    """``dimensions`` may only restate the model's width: vectors are not shortened."""
    if dimensions is not None and dimensions != width:
        raise APIError(f"dimensions={dimensions} is not supported: this model's embeddings "
                       f"have {width} dimensions", param="dimensions",
                       code="unsupported_parameter")


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """The vector as floats, or its little-endian float32 bytes in base64."""
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
