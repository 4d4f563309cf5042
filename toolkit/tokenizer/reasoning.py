"""Reasoning content (DeepSeek-R1 style ``<think>...</think>``) split from the answer."""

from __future__ import annotations

from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"


@dataclass(frozen=True)
class SplitReasoning:
    """An output split into its reasoning and its answer."""

    reasoning: str | None
    """The text inside the think block; None when there is none."""
    content: str
    """The rest."""


def split_reasoning(text: str) -> SplitReasoning:
    """Split a complete output. The opening tag may be missing (templates that put it in
    the prompt): text before ``</think>`` is then the reasoning."""
    stripped = text.lstrip()
    if stripped.startswith(THINK_START):
        stripped = stripped[len(THINK_START):]
    elif THINK_END not in text:
        return SplitReasoning(None, text)
    reasoning, found, content = stripped.partition(THINK_END)
    if not found:
        return SplitReasoning(reasoning, "")
    return SplitReasoning(reasoning, content.lstrip("\n"))


class ReasoningStream:
    """Splits a streamed output: each delta -> (reasoning part, content part).

    Holds back text that could still be the start of a tag.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._state = "start"

    def feed(self, delta: str, final: bool = False) -> tuple[str, str]:
        """The reasoning and content text to send for ``delta`` (either may be empty)."""
        self._buffer += delta
        reasoning = content = ""
        if self._state == "start":
            probe = self._buffer.lstrip()
            if probe.startswith(THINK_START):
                self._buffer, self._state = probe[len(THINK_START):], "thinking"
            elif THINK_START.startswith(probe) and not final:
                return "", ""
            else:
                self._state = "content"
        if self._state == "thinking":
            head, found, tail = self._buffer.partition(THINK_END)
            if found:
                reasoning, self._buffer, self._state = head, tail.lstrip("\n"), "content"
            else:
                keep = 0 if final else _partial_suffix(self._buffer, THINK_END)
                reasoning = self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(reasoning):]
                return reasoning, ""
        content, self._buffer = self._buffer, ""
        return reasoning, content


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
