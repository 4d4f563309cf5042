"""What the Responses API returns: the Response object, its output items, usage and the
typed stream events (pydantic v2). Shapes follow OpenAI's; None fields are sent as null."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from toolkit.api.openai.protocol_responses import (
    ReasoningOptions,
    ResponsesTool,
    ResponsesToolChoice,
    TextConfig,
)

ItemStatus = Literal["in_progress", "completed", "incomplete"]
"""An output item's status."""

ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]
"""A response's status."""


def item_id(prefix: str) -> str:
    """A fresh item or response id such as ``msg_<hex>``."""
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputText(BaseModel):
    """A text part of an output message."""

    type: Literal["output_text"] = "output_text"
    text: str = Field(description="The generated text.")
    annotations: list[Any] = Field(default_factory=list, description="Always empty.")
    logprobs: list[Any] = Field(default_factory=list, description="Always empty.")


class OutputMessage(BaseModel):
    """The assistant's answer."""

    type: Literal["message"] = "message"
    id: str = Field(default_factory=lambda: item_id("msg"), description="The item's id.")
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = Field("completed", description="incomplete when cut off.")
    content: list[OutputText] = Field(default_factory=list, description="One text part.")


class ReasoningText(BaseModel):
    """The text of a reasoning item (or a streamed reasoning part)."""

    type: Literal["reasoning_text"] = "reasoning_text"
    text: str = Field(description="The model's reasoning.")


class ReasoningItem(BaseModel):
    """The model's reasoning, split out by the server's reasoning parser."""

    type: Literal["reasoning"] = "reasoning"
    id: str = Field(default_factory=lambda: item_id("rs"), description="The item's id.")
    status: ItemStatus = Field("completed", description="incomplete when cut off.")
    summary: list[Any] = Field(default_factory=list, description="Always empty.")
    content: list[ReasoningText] = Field(default_factory=list, description="One text part.")


class FunctionCallItem(BaseModel):
    """A call of one of the request's functions; answer it with a function_call_output
    item whose call_id matches."""

    type: Literal["function_call"] = "function_call"
    id: str = Field(default_factory=lambda: item_id("fc"), description="The item's id.")
    call_id: str = Field(description="The call's id.")
    name: str = Field(description="The called function.")
    arguments: str = Field(description="The arguments as JSON text.")
    status: ItemStatus = Field("completed", description="incomplete when cut off.")


OutputItem = Annotated[OutputMessage | ReasoningItem | FunctionCallItem,
                       Field(discriminator="type")]
"""One output item."""


class InputTokensDetails(BaseModel):
    """Input token breakdown (prefix-cache hits are not reported: 0)."""

    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    """Output token breakdown (reasoning tokens are not counted apart: 0)."""

    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    """Token counts of one response."""

    input_tokens: int = Field(description="Tokens in the rendered prompt.")
    output_tokens: int = Field(description="Tokens generated.")
    total_tokens: int = Field(description="input_tokens + output_tokens.")
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int) -> ResponseUsage:
        """Usage with the total filled in."""
        return cls(input_tokens=input_tokens, output_tokens=output_tokens,
                   total_tokens=input_tokens + output_tokens)


class IncompleteDetails(BaseModel):
    """Why a response is incomplete."""

    reason: Literal["max_output_tokens"] = "max_output_tokens"


class ResponseObject(BaseModel):
    """A response: its status, output items and usage, plus the request's options."""

    id: str = Field(description="resp_<hex>.")
    object: Literal["response"] = "response"
    created_at: int = Field(description="Unix seconds when the request arrived.")
    completed_at: int | None = Field(None, description="Unix seconds when it finished.")
    status: ResponseStatus = Field(description="in_progress, completed or incomplete.")
    error: dict[str, Any] | None = Field(None, description="Always null here.")
    incomplete_details: IncompleteDetails | None = Field(
        None, description="Set when status is incomplete."
    )
    model: str = Field(description="The served model name.")
    output: list[OutputItem] = Field(default_factory=list, description="Generated items.")
    usage: ResponseUsage | None = Field(None, description="Null until the response ends.")
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    parallel_tool_calls: bool = True
    tool_choice: ResponsesToolChoice = "auto"
    tools: list[ResponsesTool] = Field(default_factory=list)
    text: TextConfig = Field(default_factory=TextConfig)
    reasoning: ReasoningOptions | None = None
    truncation: Literal["disabled"] = "disabled"
    metadata: dict[str, str] | None = None
    user: str | None = None


class DeletedResponse(BaseModel):
    """Body of ``DELETE /v1/responses/{id}``."""

    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class ResponseEvent(BaseModel):
    """``response.created`` / ``in_progress`` / ``completed`` / ``incomplete``: the
    response as it stands."""

    type: Literal["response.created", "response.in_progress", "response.completed",
                  "response.incomplete"]
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(BaseModel):
    """``response.output_item.added`` / ``.done``: an item opens or closes."""

    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputItem


class PartEvent(BaseModel):
    """The fields every event about one content part of an output item carries."""

    sequence_number: int
    item_id: str
    output_index: int
    content_index: int = 0


class ContentPartEvent(PartEvent):
    """``response.content_part.added`` / ``.done``: a text part opens or closes."""

    type: Literal["response.content_part.added", "response.content_part.done"]
    part: OutputText | ReasoningText


class TextDeltaEvent(PartEvent):
    """``response.output_text.delta``: more answer text."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class TextDoneEvent(PartEvent):
    """``response.output_text.done``: the part's whole text."""

    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class ReasoningDeltaEvent(PartEvent):
    """``response.reasoning_text.delta``: more reasoning text."""

    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    delta: str


class ReasoningDoneEvent(PartEvent):
    """``response.reasoning_text.done``: the reasoning's whole text."""

    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    text: str


class ArgumentsDeltaEvent(BaseModel):
    """``response.function_call_arguments.delta``: more of a call's arguments."""

    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta")
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(BaseModel):
    """``response.function_call_arguments.done``: a call's whole arguments."""

    type: Literal["response.function_call_arguments.done"] = (
        "response.function_call_arguments.done")
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(BaseModel):
    """``error``: the stream failed (engine failure, deadline); nothing follows."""

    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None
    message: str
    param: str | None


StreamEvent = (ResponseEvent | OutputItemEvent | ContentPartEvent | TextDeltaEvent
               | TextDoneEvent | ReasoningDeltaEvent | ReasoningDoneEvent
               | ArgumentsDeltaEvent | ArgumentsDoneEvent | ErrorEvent)
"""Any stream event."""
