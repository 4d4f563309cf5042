"""Requests -> prompt token ids: chat messages through the chat template, raw prompts."""

from __future__ import annotations

from toolkit.api.engine_client import TokenizerClient
from toolkit.api.errors import APIError, unsupported
from toolkit.api.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest

_TEMPLATE_ROLES = {"developer": "system"}


def chat_prompt_ids(tokenizer: TokenizerClient, request: ChatCompletionRequest) -> list[int]:
    """Render the conversation with the model's chat template and tokenize it."""
    messages = [_template_message(i, message) for i, message in enumerate(request.messages)]
    try:
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=request.add_generation_prompt
        )
    except ValueError as exc:
        raise APIError(str(exc), param="messages", code="invalid_messages") from None


def completion_prompt_ids(
    tokenizer: TokenizerClient, request: CompletionRequest
) -> list[list[int]]:
    """Token ids of each prompt: strings are encoded, token-id lists are range-checked."""
    prompts = request.prompts()
    if not prompts:
        raise APIError("The prompt must not be empty", param="prompt", code="invalid_value")
    return [_prompt_ids(tokenizer, i, prompt) for i, prompt in enumerate(prompts)]


def _prompt_ids(tokenizer: TokenizerClient, index: int, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=True)
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


def _template_message(index: int, message: ChatMessage) -> dict[str, str]:
    """A message as the chat template expects it: role and plain-text content."""
    if message.role == "tool":
        raise unsupported(f"messages[{index}].role", "The 'tool' role")
    if message.tool_calls:
        raise unsupported(f"messages[{index}].tool_calls")
    rendered = {
        "role": _TEMPLATE_ROLES.get(message.role, message.role),
        "content": _message_text(index, message),
    }
    if message.name:
        rendered["name"] = message.name
    return rendered


def _message_text(index: int, message: ChatMessage) -> str:
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
