"""A chat choice's generated text -> message parts: reasoning, content, tool calls.

``split_message`` handles a complete output; ``ChoiceStream`` turns streamed text deltas
into delta messages, holding back what may still become a tag or a tool call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.api.protocol_tools import FunctionCallDelta, ToolCall, ToolCallDelta
from toolkit.api.responses import DeltaMessage
from toolkit.api.tools import ToolMode, parse_calls, tool_calls
from toolkit.tokenizer.reasoning import ReasoningStream, split_reasoning
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
        """Text held back: a possible tool-call start, or the whole output (required)."""
        self.calling = mode.kind in ("named", "required")
        self.num_calls = 0
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
        """auto: content until the parser's marker, then held; required: all held.
        At the end the held text is parsed into calls (or sent as content)."""
        self.held += text
        deltas = []
        if not self.calling:
            start = self.held.find(self.parser.marker)
            cut = start if start >= 0 else len(self.held) - _partial(self.held,
                                                                    self.parser.marker)
            if final:
                cut = start if start >= 0 else len(self.held)
            if cut > 0:
                deltas.append(DeltaMessage(content=self.held[:cut]))
                self.held = self.held[cut:]
            self.calling = start >= 0
        if final and self.held:
            deltas.extend(self._flush())
        return deltas

    def _flush(self) -> list[DeltaMessage]:
        parsed = parse_calls(self.mode, self.held, self.parser)
        calls = tool_calls(parsed)
        self.held = ""
        if not calls:
            return [DeltaMessage(content=parsed.content)] if parsed.content else []
        self.num_calls = len(calls)
        return [_call_delta(i, call, call.function.arguments) for i, call in enumerate(calls)]


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
