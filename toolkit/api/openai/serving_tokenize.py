"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shapes."""

from __future__ import annotations

import json

from blacksheep import Request, Response
from pydantic import BaseModel, Field, NonNegativeInt

from toolkit.api.context import ServingContext
from toolkit.api.http.body import parse_body
from toolkit.api.http.errors import APIError
from toolkit.api.http.render import json_response
from toolkit.api.openai.prompts import chat_prompt_ids
from toolkit.api.openai.protocol import ChatOptions
from toolkit.api.openai.serving_base import check_model


class TokenizeCompletionRequest(BaseModel):
    """``/tokenize`` with a raw prompt."""

    model: str | None = Field(None, description="A served model name.")
    prompt: str = Field(description="The text to tokenize.")
    add_special_tokens: bool = Field(True, description="Add the tokenizer's special tokens.")
    return_token_strs: bool = Field(False, description="Also return each token's text.")


class TokenizeChatRequest(ChatOptions):
    """``/tokenize`` with chat messages, rendered as chat completions would render them."""

    model: str | None = Field(None, description="A served model name.")
    return_token_strs: bool = Field(False, description="Also return each token's text.")


class TokenizeResponse(BaseModel):
    """The token ids of the prompt."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    """``/detokenize``."""

    model: str | None = Field(None, description="A served model name.")
    tokens: list[NonNegativeInt] = Field(description="Token ids to decode.")


class DetokenizeResponse(BaseModel):
    """The decoded text."""

    prompt: str


class TokenizeServing:
    """Tokenization without generation."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    async def tokenize(self, request: Request) -> Response:
        """Token ids of a prompt, or of chat messages through the chat template."""
        chat = _has_messages(await request.read())
        body = await parse_body(request, TokenizeChatRequest if chat else TokenizeCompletionRequest)
        check_model(self.ctx, body.model)
        tokenizer = self.ctx.engine.tokenizer
        if isinstance(body, TokenizeChatRequest):
            ids = chat_prompt_ids(tokenizer, body, self.ctx.chat_template)
        else:
            ids = tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
        strs = tokenizer.token_strings(ids) if body.return_token_strs else None
        return json_response(TokenizeResponse(count=len(ids), tokens=ids, token_strs=strs,
                                              max_model_len=self.ctx.engine.max_model_len))

    async def detokenize(self, request: Request) -> Response:
        """The text of a list of token ids."""
        body = await parse_body(request, DetokenizeRequest)
        check_model(self.ctx, body.model)
        vocab = self.ctx.engine.tokenizer.vocab_size
        bad = [t for t in body.tokens if t >= vocab]
        if bad:
            raise APIError(f"Token id {bad[0]} is out of range for a vocabulary of {vocab} "
                           "tokens", param="tokens", code="invalid_value")
        text = self.ctx.engine.tokenizer.decode(body.tokens, skip_special_tokens=False)
        return json_response(DetokenizeResponse(prompt=text))


def _has_messages(raw: bytes) -> bool:
    """True when the body is a JSON object with ``messages`` (a chat tokenize request)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return False
    return isinstance(data, dict) and "messages" in data
