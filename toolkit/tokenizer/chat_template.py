"""Chat templates rendered in jinja2's immutable sandbox.

A template may come from the model, the server config or the request itself, so it is
untrusted code: it runs in ``ImmutableSandboxedEnvironment`` (no attribute access to
internals, no mutation of the passed objects), compiled templates are cached by source.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

RESERVED_KWARGS = frozenset({
    "messages", "documents", "add_generation_prompt", "continue_final_message",
    "bos_token", "eos_token", "tools", "raise_exception", "strftime_now",
})
"""Template variables that chat_template_kwargs may not override."""


@dataclass(frozen=True)
class ChatRender:
    """What one rendering needs besides the messages."""

    add_generation_prompt: bool = True
    """Append the assistant turn header."""
    continue_final_message: bool = False
    """Leave the last message open so the model continues it (no end-of-turn token)."""
    documents: list[dict[str, Any]] | None = None
    """Retrieval documents for templates that take them (RAG)."""
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra variables for the template."""
    tools: list[dict[str, Any]] | None = None
    """Tool definitions (OpenAI's ``tools``), for templates that render them."""


def shipped_template(name: str) -> str:
    """A template shipped with toolkit (``toolkit/tokenizer/templates/<name>.jinja``)."""
    folder = importlib.resources.files("toolkit.tokenizer") / "templates"
    return (folder / f"{name}.jinja").read_text()


def supports_tools(source: str) -> bool:
    """True when a template reads the ``tools`` variable."""
    return "tools" in source


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """``tojson`` as transformers' chat templates have it: keys in their order, no HTML
    escaping (jinja2's own sorts keys and writes ``<`` as ``\\u003c``)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@functools.lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """Compile a template in the sandbox (cached by its source)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def render_chat(source: str, messages: list[dict[str, Any]], options: ChatRender,
                special_tokens: dict[str, str]) -> str:
    """Render ``messages``; raises ValueError on a bad template, a sandbox violation or a
    reserved kwarg."""
    clash = sorted(RESERVED_KWARGS & options.template_kwargs.keys())
    if clash:
        raise ValueError(f"chat_template_kwargs may not set {', '.join(clash)}")
    if options.continue_final_message and options.add_generation_prompt:
        raise ValueError("continue_final_message and add_generation_prompt are exclusive")
    try:
        text = compile_template(source).render(
            **options.template_kwargs, **special_tokens, messages=messages,
            documents=options.documents, tools=options.tools,
            add_generation_prompt=options.add_generation_prompt)
    except Exception as exc:  # the template's own errors (1 // 0 included) are the caller's
        raise ValueError(f"chat template failed: {exc}") from exc
    if options.continue_final_message:
        text = _open_final_message(text, messages)
    return text


def _open_final_message(text: str, messages: list[dict[str, Any]]) -> str:
    """Cut the rendering right after the last message's content."""
    content = messages[-1].get("content") if messages else None
    if not isinstance(content, str) or not content.strip():
        raise ValueError("continue_final_message needs a last message with text content")
    end = text.rfind(content.strip())
    if end < 0:
        raise ValueError("the chat template does not render the final message's content")
    return text[: end + len(content.strip())]
