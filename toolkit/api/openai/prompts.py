"""Requests -> prompt token ids: chat messages through the chat template, raw prompts."""

from __future__ import annotations

import json

from toolkit.api.engine_client import TokenizerClient
from toolkit.api.http.errors import APIError, unsupported
from toolkit.api.openai.images import image_parts
from toolkit.api.openai.protocol import ChatMessage, ChatOptions, CompletionRequest
from toolkit.tokenizer.chat_template import ChatRender, shipped_template, supports_tools

_TEMPLATE_ROLES = {"developer": "system"}

DEFAULT_TOOL_TEMPLATE = "chatml_hermes_tools"
"""The shipped template used when tools meet a template that ignores them."""


def chat_prompt_ids(tokenizer: TokenizerClient, request: ChatOptions,
                    default_template: str | None = None,
                    tool_chat_template: str | None = None) -> list[int]:
    """Render the conversation with the request's, the server's or the model's chat
    template (in a sandbox) and tokenize it. With tools (or tool messages) and a template
    that ignores them, ``tool_chat_template`` (else the shipped ChatML one) renders instead.
    Text only: image parts are expanded by chat completions alone (a 400 elsewhere)."""
    images = image_parts(request.messages)
    if images:
        raise unsupported(images[0].param, "An image_url content part on this endpoint")
    text = chat_prompt_text(tokenizer, request, default_template, tool_chat_template)
    return tokenizer.encode(text, add_special_tokens=request.add_special_tokens)


def chat_prompt_text(tokenizer: TokenizerClient, request: ChatOptions,
                     default_template: str | None = None,
                     tool_chat_template: str | None = None) -> str:
    """The conversation rendered as ``chat_prompt_ids`` renders it, untokenized. For a
    model that takes images, message contents reach the template as lists of parts
    (``{"type": "text", "text"}`` / ``{"type": "image"}``), as its processor's template
    expects, and the template writes an image placeholder per image part."""
    as_parts = getattr(tokenizer, "images", None) is not None
    messages = [template_message(i, message, as_parts)
                for i, message in enumerate(request.messages)]
    tools = rendered_tools(request)
    options = ChatRender(
        add_generation_prompt=request.add_generation_prompt,
        continue_final_message=request.continue_final_message,
        documents=request.documents,
        template_kwargs=dict(request.chat_template_kwargs or {}),
        tools=tools,
    )
    template = request.chat_template or default_template
    if tools or any(m.role == "tool" or m.tool_calls for m in request.messages):
        template = _tool_capable(tokenizer, template, tool_chat_template)
    try:
        return tokenizer.render_chat(messages, options, template)
    except ValueError as exc:
        param = "chat_template_kwargs" if "chat_template_kwargs" in str(exc) else "messages"
        raise APIError(str(exc), param=param, code="invalid_messages") from None


def rendered_tools(request: ChatOptions) -> list[dict] | None:
    """The tools the template shows the model: none when tool_choice is none."""
    tools = getattr(request, "tools", None)
    if not tools or getattr(request, "tool_choice", None) == "none":
        return None
    return [tool.model_dump(exclude_none=True) for tool in tools]


def _tool_capable(tokenizer: TokenizerClient, template: str | None,
                  tool_chat_template: str | None) -> str:
    source = template or getattr(tokenizer, "chat_template", None) or ""
    if supports_tools(source):
        return source
    return tool_chat_template or shipped_template(DEFAULT_TOOL_TEMPLATE)


def completion_prompt_ids(
    tokenizer: TokenizerClient, request: CompletionRequest
) -> list[list[int]]:
    """Token ids of each prompt: strings are encoded, token-id lists are range-checked."""
    return encode_prompts(tokenizer, request.prompts(), request.add_special_tokens, "prompt")


def encode_prompts(tokenizer: TokenizerClient, prompts: list[str | list[int]],
                   add_special_tokens: bool, param: str) -> list[list[int]]:
    """Token ids of each prompt (strings encoded, token-id lists range-checked); an empty
    list, an empty prompt or a bad id is a 400 naming ``param``."""
    if not prompts:
        raise APIError(f"The {param} must not be empty", param=param, code="invalid_value")
    return [_prompt_ids(tokenizer, i, prompt, add_special_tokens, param)
            for i, prompt in enumerate(prompts)]


def truncate_prompt(ids: list[int], keep: int | None) -> list[int]:
    """The last ``keep`` tokens (all when None)."""
    return ids if keep is None else ids[-keep:]


def _prompt_ids(tokenizer: TokenizerClient, index: int, prompt: str | list[int],
                add_special_tokens: bool, param: str) -> list[int]:
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    else:
        ids = prompt
        bad = [token for token in ids if token >= tokenizer.vocab_size]
        if bad:
            raise APIError(
                f"Token id {bad[0]} is out of range for a vocabulary of "
                f"{tokenizer.vocab_size} tokens",
                param=param,
                code="invalid_value",
            )
    if not ids:
        raise APIError(
            f"Prompt {index} is empty: it must contain at least one token",
            param=param,
            code="invalid_value",
        )
    return ids


def template_message(index: int, message: ChatMessage, as_parts: bool = False) -> dict:
    """A message as the chat template expects it: role, plain-text content (a list of
    text and image parts when ``as_parts``), name, and the tool calls (arguments decoded
    when they are JSON) or the answered call id."""
    rendered: dict = {
        "role": _TEMPLATE_ROLES.get(message.role, message.role),
        "content": message_parts(index, message) if as_parts else message_text(index, message),
    }
    if message.name:
        rendered["name"] = message.name
    if message.tool_calls:
        rendered["tool_calls"] = [_template_call(index, j, call)
                                  for j, call in enumerate(message.tool_calls)]
    if message.tool_call_id:
        rendered["tool_call_id"] = message.tool_call_id
    return rendered


def _template_call(index: int, j: int, call: dict) -> dict:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise APIError("A tool call needs function.name", code="invalid_value",
                       param=f"messages[{index}].tool_calls[{j}].function")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return {"id": call.get("id"), "type": "function",
            "function": {"name": function["name"], "arguments": arguments}}


def message_parts(index: int, message: ChatMessage) -> list[dict]:
    """The message content as template parts: ``{"type": "text", "text"}`` and
    ``{"type": "image"}`` (a string content is one text part)."""
    content = message.content
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    parts = []
    for j, part in enumerate(content):
        if part.type == "image_url":
            parts.append({"type": "image"})
        else:
            parts.append({"type": "text", "text": _part_text(f"messages[{index}].content[{j}]",
                                                             part)})
    return parts


def _part_text(param: str, part) -> str:
    """A text part's text (400 for another part type or a missing text)."""
    if part.type != "text":
        raise unsupported(f"{param}.type", f"Content part type '{part.type}'")
    if part.text is None:
        raise APIError("A text content part needs 'text'", param=f"{param}.text",
                       code="invalid_value")
    return part.text


def message_text(index: int, message: ChatMessage) -> str:
    """The message content as one string; text parts are joined with newlines."""
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(_part_text(f"messages[{index}].content[{j}]", part)
                     for j, part in enumerate(content))
