"""What every endpoint needs: the engine plus the server options that shape responses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.api.engine_client import EngineClient
from toolkit.api.openai.protocol_embeddings import POOLING_TYPES
from toolkit.api.openai.sampling import generation_defaults
from toolkit.config.schema import EmbeddingConfig, MediaConfig
from toolkit.tokenizer.tool_parsers import ToolParser, get_tool_parser

if TYPE_CHECKING:
    from toolkit.config.schema import ServerConfig

_TEMPLATE_MARKERS = ("{{", "{%")


@dataclass(frozen=True)
class ServingContext:
    """The engine and the resolved server options, shared by the endpoint classes."""

    engine: EngineClient
    """The started engine."""
    served_model_name: tuple[str, ...]
    """Names accepted in requests (server.served_model_name, else the engine's model
    name); the first is reported."""
    chat_template: str | None = None
    """Default chat template source (None: the model's own)."""
    response_role: str = "assistant"
    """Role of generated chat messages."""
    max_logprobs: int = 20
    """Most logprob alternatives a request may ask for."""
    max_n: int = 16
    """Most choices (n) and samples (best_of, beams) one request may ask for."""
    return_tokens_as_token_ids: bool = False
    """Logprob tokens as ``token_id:<id>``."""
    enable_log_requests: bool = False
    """Log each request's prompt and parameters."""
    max_log_len: int | None = None
    """Most prompt characters / ids written to the request log."""
    tool_parser: ToolParser = field(default_factory=lambda: get_tool_parser("hermes"))
    """Reads tool calls from outputs under tool_choice=auto."""
    tool_chat_template: str | None = None
    """Template for requests with tools when the chosen one ignores them (None: shipped)."""
    reasoning: bool = False
    """Split ``<think>`` reasoning into reasoning_content."""
    request_timeout: float | None = None
    """Seconds a generation request may take; None: no deadline."""
    embedding: EmbeddingConfig = field(default_factory=lambda: EmbeddingConfig())
    """How /v1/embeddings pools hidden states and whether it L2-normalizes them."""
    kobold_max_length: int = 256
    """The output length the Kobold API reports."""
    media: MediaConfig = field(default_factory=lambda: MediaConfig())
    """Image inputs: whether http(s) URLs are fetched, the fetch timeout, size limits."""
    sampling_defaults: Mapping[str, Any] = field(default_factory=dict)
    """Values of the sampling parameters a request leaves unset (server.generation_config:
    the model's generation_config.json, as vLLM); a request's own values win."""

    @property
    def model_name(self) -> str:
        """The reported model name."""
        return self.served_model_name[0]

    def response_model(self, requested: str | None) -> str:
        """The ``model`` a response reports: the (checked) name the request asked for, a
        served alias or a LoRA adapter, as vLLM echoes it; else the first served name."""
        return requested or self.model_name

    @classmethod
    def from_config(cls, engine: EngineClient, config: ServerConfig) -> ServingContext:
        """Resolve aliases and the chat template; a bad template path (or pooling, or a
        max_n below 1) is a ValueError."""
        return cls(
            engine=engine,
            served_model_name=tuple(config.served_model_name) or (engine.model_name,),
            chat_template=load_chat_template(config.chat_template),
            response_role=config.response_role,
            max_logprobs=config.max_logprobs,
            max_n=_max_n(config.max_n),
            return_tokens_as_token_ids=config.return_tokens_as_token_ids,
            enable_log_requests=config.enable_log_requests,
            max_log_len=config.max_log_len,
            tool_parser=get_tool_parser(config.chat.tool_parser),
            tool_chat_template=load_chat_template(config.chat.tool_chat_template),
            reasoning=config.chat.reasoning,
            request_timeout=config.request_timeout,
            embedding=_embedding(config.embedding),
            kobold_max_length=config.kobold_max_length,
            media=config.media,
            sampling_defaults=generation_defaults(config.generation_config),
        )


def _max_n(value: int) -> int:
    if value < 1:
        raise ValueError(f"server.max_n={value} must be >= 1")
    return value


def _embedding(config: EmbeddingConfig) -> EmbeddingConfig:
    if config.pooling not in POOLING_TYPES:
        raise ValueError(f"server.embedding.pooling={config.pooling!r} must be one of "
                         f"{POOLING_TYPES}")
    return config


def load_chat_template(value: str | None) -> str | None:
    """A template file's text, an inline template as is, or None."""
    if value is None:
        return None
    if any(marker in value for marker in _TEMPLATE_MARKERS):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"server.chat_template: {value!r} is neither a file nor a template")
    return path.read_text()
