"""Tool calls read from streamed text, character by character.

Every supported format (hermes ``<tool_call>`` blocks, mistral and forced ``[...]``
arrays, llama3 objects joined by ``;``) is a run of JSON call objects
``{"name": ..., "arguments" | "parameters": {...}}`` with other text between them.
``CallScanner`` reports a call's name as soon as it is complete, then the raw JSON text
of its arguments as it arrives, so a server can stream them in OpenAI's shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ARGUMENT_KEYS = ("arguments", "parameters")
"""Keys whose value is a call's arguments."""


@dataclass(frozen=True)
class CallEvent:
    """Call ``index`` started (``name`` set) or grew by an ``arguments`` fragment."""

    index: int
    name: str | None = None
    arguments: str = ""


class _Value:
    """One JSON value being read: knows which characters belong to it and when it ends."""

    def __init__(self, first: str) -> None:
        self.kind = "string" if first == '"' else "container" if first in "{[" else "scalar"
        self.text = first
        self.depth = 1 if self.kind == "container" else 0
        self.in_string = self.kind == "string"
        self.escaped = False
        self.done = False

    def feed(self, char: str) -> bool:
        """Take ``char``; False when it is not part of the value (it ended a scalar)."""
        if self.kind == "scalar" and (char in ",}]" or char.isspace()):
            self.done = True
            return False
        self.text += char
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
                self.done = self.kind == "string"
        elif char == '"':
            self.in_string = True
        elif char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
            self.done = self.depth == 0
        return True


@dataclass
class _Call:
    """The call object being read (its own keys, at depth 1)."""

    state: str = "key_or_end"
    """key_or_end, key, colon, value_start or value."""
    key: _Value | None = None
    value: _Value | None = None
    name: str | None = None
    started: bool = False
    pending: list[str] = field(default_factory=list)
    """Argument fragments read before the name (sent once it is known)."""


class CallScanner:
    """Incremental reader of call objects; ``feed`` returns the events of new text."""

    def __init__(self) -> None:
        self.num_calls = 0
        """Calls whose name has been reported."""
        self._call: _Call | None = None
        self._events: list[CallEvent] = []

    def feed(self, text: str) -> list[CallEvent]:
        for char in text:
            if self._call is None:
                if char == "{":
                    self._call = _Call()
            else:
                self._step(self._call, char)
        events, self._events = _merge(self._events), []
        return events

    def _step(self, call: _Call, char: str) -> None:
        if call.state == "value":
            if call.value.feed(char):
                self._value_text(call, char)
                if call.value.done:
                    self._value_done(call)
                return
            self._value_done(call)  # a scalar ended: the delimiter is read below
        if call.state == "key_or_end":
            if char == '"':
                call.key, call.state = _Value(char), "key"
            elif char == "}":
                self._finish(call)
        elif call.state == "key":
            call.key.feed(char)
            if call.key.done:
                call.state = "colon"
        elif call.state == "colon":
            if char == ":":
                call.state = "value_start"
        elif call.state == "value_start" and not char.isspace():
            call.value, call.state = _Value(char), "value"
            self._value_text(call, char)

    def _value_text(self, call: _Call, char: str) -> None:
        """Raw characters of an object or array argument value are sent as they come."""
        if self._key(call) in ARGUMENT_KEYS and call.value.kind == "container":
            self._arguments(call, char)

    def _value_done(self, call: _Call) -> None:
        key, value = self._key(call), call.value
        call.state, call.key, call.value = "key_or_end", None, None
        if value.kind != "string":
            return
        text = _loads_string(value.text)
        if key == "name" and text is not None and not call.started:
            call.name = text
            self._start(call)
        elif key in ARGUMENT_KEYS and text is not None:
            self._arguments(call, text)

    def _start(self, call: _Call) -> None:
        call.started = True
        self._events.append(CallEvent(self.num_calls, name=call.name))
        for fragment in call.pending:
            self._events.append(CallEvent(self.num_calls, arguments=fragment))
        call.pending.clear()

    def _arguments(self, call: _Call, text: str) -> None:
        if call.started:
            self._events.append(CallEvent(self.num_calls, arguments=text))
        else:
            call.pending.append(text)

    def _finish(self, call: _Call) -> None:
        if call.started:
            self.num_calls += 1
        self._call = None

    @staticmethod
    def _key(call: _Call) -> str | None:
        return _loads_string(call.key.text) if call.key is not None else None


def _loads_string(token: str) -> str | None:
    try:
        value = json.loads(token)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None


def _merge(events: list[CallEvent]) -> list[CallEvent]:
    """Adjacent argument fragments of one call joined into one event."""
    merged: list[CallEvent] = []
    for event in events:
        last = merged[-1] if merged else None
        if (last is not None and last.name is None and event.name is None
                and last.index == event.index):
            merged[-1] = CallEvent(event.index, arguments=last.arguments + event.arguments)
        else:
            merged.append(event)
    return merged
