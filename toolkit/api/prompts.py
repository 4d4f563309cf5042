"""Requests -> prompt token ids: chat messages through the chat template, raw prompts."""

from __future__ import annotations

from toolkit.api.engine_client import TokenizerClient
from toolkit.api.errors import APIError, unsupported
from toolkit.api.protocol import ChatMessage, ChatOptions, CompletionRequest
from toolkit.tokenizer.chat_template import ChatRender

_TEMPLATE_ROLES = {"developer": "system"}


def chat_prompt_ids(tokenizer: TokenizerClient, request: ChatOptions,
                    default_template: str | None = None) -> list[int]:
    """Render the conversation with the request's, the server's or the model's chat
    template (in a sandbox) and tokenize it."""
    messages = [template_message(i, message) for i, message in enumerate(request.messages)]
    options = ChatRender(
        add_generation_prompt=request.add_generation_prompt,
        continue_final_message=request.continue_final_message,
        documents=request.documents,
        template_kwargs=dict(request.chat_template_kwargs or {}),
    )
    try:
        text = tokenizer.render_chat(messages, options, request.chat_template or default_template)
    except ValueError as exc:
        param = "chat_template_kwargs" if "chat_template_kwargs" in str(exc) else "messages"
        raise APIError(str(exc), param=param, code="invalid_messages") from None
    return tokenizer.encode(text, add_special_tokens=request.add_special_tokens)


def completion_prompt_ids(
    tokenizer: TokenizerClient, request: CompletionRequest
) -> list[list[int]]:
    """Token ids of each prompt: strings are encoded, token-id lists are range-checked."""
    prompts = request.prompts()
    if not prompts:
        raise APIError("The prompt must not be empty", param="prompt", code="invalid_value")
    return [_prompt_ids(tokenizer, i, prompt, request.add_special_tokens)
            for i, prompt in enumerate(prompts)]


def truncate_prompt(ids: list[int], keep: int | None) -> list[int]:
    """The last ``keep`` tokens (all when None)."""
    return ids if keep is None else ids[-keep:]


def _prompt_ids(tokenizer: TokenizerClient, index: int, prompt: str | list[int],
                add_special_tokens: bool) -> list[int]:
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    else:
        ids = prompt
        bad = [token for token in ids if token >= tokenizer.vocab_size]
        if bad:
            raise APIError(
                f"Token id {bad[0]} is out of range for a vocabulary of "
                f"{tokenizer.vocab_size} tokens",
                param="prompt",
                code="invalid_value",
            )
    if not ids:
        raise APIError(
            f"Prompt {index} is empty: it must contain at least one token",
            param="prompt",
            code="invalid_value",
        )
    return ids


def template_message(index: int, message: ChatMessage) -> dict[str, str]:
    """A message as the chat template expects it: role, plain-text content, name."""
    if message.role == "tool":
        raise unsupported(f"messages[{index}].role", "The 'tool' role")
    if message.tool_calls:
        raise unsupported(f"messages[{index}].tool_calls")
    rendered = {
        "role": _TEMPLATE_ROLES.get(message.role, message.role),
        "content": message_text(index, message),
    }
    if message.name:
        rendered["name"] = message.name
    return rendered


def message_text(index: int, message: ChatMessage) -> str:
    """The message content as one string; text parts are joined with newlines."""
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        param = f"messages[{index}].content[{j}]"
        if part.type != "text":
            raise unsupported(f"{param}.type", f"Content part type '{part.type}'")
        if part.text is None:
            raise APIError("A text content part needs 'text'", param=f"{param}.text",
                           code="invalid_value")
        texts.append(part.text)
    return "\n".join(texts)
