"""The chat path's output -> Responses output items and typed stream events.

A complete chat message (reasoning, content, tool calls) becomes reasoning, message and
function_call items; a stream of chat delta messages becomes the events that open, fill
and close the same items, each numbered by ``sequence_number``.
"""

from __future__ import annotations

from toolkit.api.http.errors import APIError
from toolkit.api.openai.protocol import ChatMessage
from toolkit.api.openai.protocol_tools import ToolCallDelta
from toolkit.api.openai.response_objects import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    ErrorEvent,
    FunctionCallItem,
    IncompleteDetails,
    OutputItem,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    ReasoningDeltaEvent,
    ReasoningDoneEvent,
    ReasoningItem,
    ReasoningText,
    ResponseEvent,
    ResponseObject,
    ResponseUsage,
    StreamEvent,
    TextDeltaEvent,
    TextDoneEvent,
)
from toolkit.api.openai.responses import AssistantMessage, DeltaMessage, now


def is_incomplete(finish_reason: str | None) -> bool:
    """True when the output was cut off by the token budget."""
    return finish_reason == "length"


def output_items(message: AssistantMessage, incomplete: bool) -> list[OutputItem]:
    """Reasoning, then the answer (unless the message only calls tools), then the calls;
    when cut off, the last item is incomplete."""
    items: list[OutputItem] = []
    if message.reasoning_content is not None:
        items.append(ReasoningItem(content=[ReasoningText(text=message.reasoning_content)]))
    if message.content is not None or not message.tool_calls:
        items.append(OutputMessage(content=[OutputText(text=message.content or "")]))
    items.extend(FunctionCallItem(call_id=call.id, name=call.function.name,
                                  arguments=call.function.arguments)
                 for call in message.tool_calls)
    if incomplete:
        items[-1].status = "incomplete"
    return items


def finish(response: ResponseObject, output: list[OutputItem], usage: ResponseUsage,
           incomplete: bool) -> ResponseObject:
    """``response`` ended: its output, usage, status and completion time."""
    return response.model_copy(update={
        "output": output, "usage": usage, "completed_at": now(),
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": IncompleteDetails() if incomplete else None,
    })


def conversation_messages(output: list[OutputItem]) -> list[ChatMessage]:
    """The output as the assistant turn a later request continues from (reasoning left
    out, as chat templates drop it)."""
    text = "".join(part.text for item in output if isinstance(item, OutputMessage)
                   for part in item.content)
    calls = [{"id": item.call_id, "type": "function",
              "function": {"name": item.name, "arguments": item.arguments}}
             for item in output if isinstance(item, FunctionCallItem)]
    return [ChatMessage(role="assistant", content=text, tool_calls=calls or None)]


class ResponseStream:
    """Chat delta messages in, Responses events out, for one streamed response.

    At most one item is open at a time: a delta of another kind (reasoning, text, a new
    call) closes it and opens the next.
    """

    def __init__(self, response: ResponseObject) -> None:
        self.response = response
        """The response as created (status in_progress, no output)."""
        self.items: list[OutputItem] = []
        """Output items so far; the last one may be open."""
        self.open: OutputItem | None = None
        self.calls: dict[int, FunctionCallItem] = {}
        """Function call items by the chat's tool call index."""
        self.sequence = 0

    def opening(self) -> list[StreamEvent]:
        """``response.created`` and ``response.in_progress``."""
        return [self._emit(ResponseEvent, type=kind, response=self.response)
                for kind in ("response.created", "response.in_progress")]

    def feed(self, delta: DeltaMessage) -> list[StreamEvent]:
        """The events of one chat delta message."""
        events: list[StreamEvent] = []
        if delta.reasoning_content:
            events += self._reasoning(delta.reasoning_content)
        if delta.content:
            events += self._text(delta.content)
        for call in delta.tool_calls or ():
            events += self._call(call)
        return events

    def close(self, usage: ResponseUsage, incomplete: bool) -> list[StreamEvent]:
        """Close the open item (an empty message when nothing was generated), then
        ``response.completed`` or ``response.incomplete``."""
        events = [] if self.items else self._open(OutputMessage(status="in_progress"))
        events += self._close(incomplete)
        self.response = finish(self.response, self.items, usage, incomplete)
        kind = "response.incomplete" if incomplete else "response.completed"
        events.append(self._emit(ResponseEvent, type=kind, response=self.response))
        return events

    def error(self, exc: APIError) -> StreamEvent:
        """The ``error`` event that ends a failed stream."""
        return self._emit(ErrorEvent, code=exc.code, message=exc.message, param=exc.param)

    def _reasoning(self, text: str) -> list[StreamEvent]:
        events = [] if isinstance(self.open, ReasoningItem) else self._open(
            ReasoningItem(status="in_progress"))
        self.open.content[0].text += text
        return [*events, self._emit(ReasoningDeltaEvent, delta=text, **self._where())]

    def _text(self, text: str) -> list[StreamEvent]:
        events = [] if isinstance(self.open, OutputMessage) else self._open(
            OutputMessage(status="in_progress"))
        self.open.content[0].text += text
        return [*events, self._emit(TextDeltaEvent, delta=text, **self._where())]

    def _call(self, delta: ToolCallDelta) -> list[StreamEvent]:
        events = []
        if delta.id is not None:
            item = FunctionCallItem(call_id=delta.id, name=delta.function.name or "",
                                    arguments="", status="in_progress")
            self.calls[delta.index] = item
            events += self._open(item)
        item = self.calls[delta.index]
        fragment = delta.function.arguments or ""
        if fragment:
            item.arguments += fragment
            events.append(self._emit(ArgumentsDeltaEvent, delta=fragment,
                                     item_id=item.id, output_index=self._index(item)))
        return events

    def _open(self, item: OutputItem) -> list[StreamEvent]:
        """Close the open item, add ``item`` (and its empty text part)."""
        events = self._close(False)
        self.items.append(item)
        self.open = item
        events.append(self._emit(OutputItemEvent, type="response.output_item.added",
                                 output_index=len(self.items) - 1, item=item.model_copy(
                                     deep=True)))
        if isinstance(item, OutputMessage):
            item.content.append(OutputText(text=""))
        elif isinstance(item, ReasoningItem):
            item.content.append(ReasoningText(text=""))
        if not isinstance(item, FunctionCallItem):
            events.append(self._emit(ContentPartEvent, type="response.content_part.added",
                                     part=item.content[0].model_copy(), **self._where()))
        return events

    def _close(self, incomplete: bool) -> list[StreamEvent]:
        """The done events of the open item, if any."""
        item, self.open = self.open, None
        if item is None:
            return []
        item.status = "incomplete" if incomplete else "completed"
        where = {"item_id": item.id, "output_index": self._index(item)}
        events: list[StreamEvent] = []
        if isinstance(item, FunctionCallItem):
            events.append(self._emit(ArgumentsDoneEvent, name=item.name,
                                     arguments=item.arguments, **where))
        else:
            part = item.content[0]
            done = TextDoneEvent if isinstance(item, OutputMessage) else ReasoningDoneEvent
            events.append(self._emit(done, text=part.text, content_index=0, **where))
            events.append(self._emit(ContentPartEvent, type="response.content_part.done",
                                     part=part.model_copy(), content_index=0, **where))
        events.append(self._emit(OutputItemEvent, type="response.output_item.done",
                                 output_index=where["output_index"],
                                 item=item.model_copy(deep=True)))
        return events

    def _index(self, item: OutputItem) -> int:
        """The output_index of ``item``."""
        return next(i for i, other in enumerate(self.items) if other is item)

    def _where(self) -> dict:
        """item_id and output_index of the open item."""
        return {"item_id": self.open.id, "output_index": len(self.items) - 1}

    def _emit(self, event_type: type[StreamEvent], **fields) -> StreamEvent:
        event = event_type(sequence_number=self.sequence, **fields)
        self.sequence += 1
        return event
