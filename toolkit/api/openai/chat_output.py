"""A chat choice's generated text -> message parts: reasoning, content, tool calls.

``split_message`` handles a complete output; ``ChoiceStream`` turns streamed text deltas
into delta messages, holding back what may still become a tag or a tool call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.api.openai.protocol_tools import (
    FunctionCall,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
)
from toolkit.api.openai.responses import DeltaMessage
from toolkit.api.openai.tools import ToolMode, parse_calls, tool_calls
from toolkit.tokenizer.reasoning import ReasoningStream, split_reasoning
from toolkit.tokenizer.tool_call_stream import CallEvent, CallScanner
from toolkit.tokenizer.tool_parsers import ToolParser


@dataclass(frozen=True)
class MessageParts:
    """What a complete chat output becomes."""

    content: str | None
    reasoning: str | None = None
    calls: list[ToolCall] = field(default_factory=list)


def split_message(text: str, mode: ToolMode, parser: ToolParser,
                  reasoning: bool) -> MessageParts:
    """Reasoning (when on) first, then tool calls under ``mode``."""
    thought = None
    if reasoning:
        split = split_reasoning(text)
        thought, text = split.reasoning, split.content
    if mode.kind == "none":
        return MessageParts(text, thought)
    parsed = parse_calls(mode, text, parser)
    calls = tool_calls(parsed)
    return MessageParts(parsed.content or (None if calls else ""), thought, calls)


def finish_reason(reason: str | None, has_calls: bool) -> str | None:
    """``tool_calls`` when a choice that stopped normally made calls."""
    return "tool_calls" if has_calls and reason == "stop" else reason


class ChoiceStream:
    """One streamed chat choice: text deltas in, delta messages out."""

    def __init__(self, mode: ToolMode, parser: ToolParser, reasoning: bool) -> None:
        self.mode = mode
        self.parser = parser
        self.reasoning = ReasoningStream() if reasoning else None
        self.held = ""
        """Text held back while it may still become the parser's marker (auto)."""
        self.call_text = ""
        """Output from the first call on (auto: from the marker; required: all of it)."""
        self.scanner = CallScanner()
        self.calling = mode.kind in ("named", "required")
        self.num_calls = 0
        """Calls whose first delta (id, type, name) was sent."""
        self.named_call: ToolCall | None = None

    def feed(self, text: str, final: bool) -> list[DeltaMessage]:
        """Delta messages for ``text`` (the output's next piece)."""
        deltas = []
        if self.reasoning is not None:
            thought, text = self.reasoning.feed(text, final)
            if thought:
                deltas.append(DeltaMessage(reasoning_content=thought))
        if self.mode.kind == "named":
            deltas.extend(self._named(text))
        elif self.mode.kind == "none":
            if text:
                deltas.append(DeltaMessage(content=text))
        else:
            deltas.extend(self._parsed(text, final))
        return deltas

    def _named(self, text: str) -> list[DeltaMessage]:
        deltas = []
        if self.named_call is None:
            self.named_call = tool_calls(parse_calls(self.mode, "", self.parser))[0]
            self.num_calls = 1
            deltas.append(_call_delta(0, self.named_call, ""))
        if text:
            deltas.append(DeltaMessage(tool_calls=[
                ToolCallDelta(index=0, function=FunctionCallDelta(arguments=text))]))
        return deltas

    def _parsed(self, text: str, final: bool) -> list[DeltaMessage]:
        """auto: content until the parser's marker; from there (required: from the start)
        each call streams as it is read: its name, then its argument fragments. At the end,
        call text that streamed no call is parsed whole (or sent as content)."""
        deltas = []
        if not self.calling:
            text = self._content(text, final, deltas)
        if self.calling and text:
            self.call_text += text
            deltas.extend(self._call_deltas(self.scanner.feed(text)))
        if final and self.call_text:
            deltas.extend(self._flush())
        return deltas

    def _content(self, text: str, final: bool, deltas: list[DeltaMessage]) -> str:
        """Send text before the marker as content (holding a possible partial marker);
        returns the text from the marker on once it appears, else ""."""
        self.held += text
        start = self.held.find(self.parser.marker)
        if start >= 0:
            cut = start
        else:
            cut = len(self.held) - (0 if final else _partial(self.held, self.parser.marker))
        if cut > 0:
            deltas.append(DeltaMessage(content=self.held[:cut]))
            self.held = self.held[cut:]
        self.calling = start >= 0
        if not self.calling:
            return ""
        text, self.held = self.held, ""
        return text

    def _call_deltas(self, events: list[CallEvent]) -> list[DeltaMessage]:
        """A call's first delta carries index, id, type and name; the next ones carry
        argument fragments."""
        deltas = []
        for event in events:
            if event.name is not None:
                call = ToolCall(function=FunctionCall(name=event.name, arguments=""))
                deltas.append(_call_delta(event.index, call, ""))
                self.num_calls = event.index + 1
            else:
                deltas.append(DeltaMessage(tool_calls=[ToolCallDelta(
                    index=event.index, function=FunctionCallDelta(arguments=event.arguments))]))
        return deltas

    def _flush(self) -> list[DeltaMessage]:
        """At the end, the calls of the whole output that did not stream: all of them when
        none did (auto: a format the scanner cannot follow), or (required) a last call cut
        inside its name. Auto output with no call is content."""
        if self.mode.kind == "auto" and self.num_calls:
            return []
        parsed = parse_calls(self.mode, self.call_text, self.parser)
        calls = tool_calls(parsed)
        self.call_text = ""
        if not calls:
            return [DeltaMessage(content=parsed.content)] if parsed.content else []
        first, self.num_calls = self.num_calls, max(self.num_calls, len(calls))
        return [_call_delta(i, call, call.function.arguments)
                for i, call in enumerate(calls) if i >= first]


def _call_delta(index: int, call: ToolCall, arguments: str) -> DeltaMessage:
    return DeltaMessage(tool_calls=[ToolCallDelta(
        index=index, id=call.id, type="function",
        function=FunctionCallDelta(name=call.function.name, arguments=arguments))])


def _partial(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
