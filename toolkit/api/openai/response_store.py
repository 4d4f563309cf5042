"""Stored responses (``store=true``): in memory, bounded in number and in age.

The oldest entries go first when the store is full; an entry older than the time to live
is gone (expired entries are dropped whenever the store is touched). Everything lives on
the event loop, so no lock is needed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.api.openai.protocol import ChatMessage
from toolkit.api.openai.response_objects import ResponseObject

DEFAULT_MAX_ENTRIES = 1024
"""Responses kept at most, when the config does not say."""
DEFAULT_TTL_S = 3600.0
"""Seconds a response is kept, when the config does not say."""


@dataclass(frozen=True)
class StoredResponse:
    """A finished response and the conversation a follow-up continues."""

    response: ResponseObject
    """What GET returns."""
    messages: tuple[ChatMessage, ...]
    """The chat messages up to and including this response's output, without the
    instructions (previous_response_id does not carry them over)."""
    stored_at: float
    """The store clock's time when it was put."""


class ResponseStore:
    """Responses by id; at most ``max_entries``, each for at most ``ttl_s`` seconds
    (None: no age limit). ``max_entries`` 0 stores nothing."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES,
                 ttl_s: float | None = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 0:
            raise ValueError(f"responses_max_stored={max_entries} must be >= 0")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"responses_ttl_s={ttl_s} must be > 0 (or null)")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def put(self, response: ResponseObject, messages: list[ChatMessage]) -> None:
        """Keep ``response`` (replacing one with the same id), evicting the oldest when
        full."""
        self._expire()
        if self.max_entries == 0:
            return
        self._entries.pop(response.id, None)
        self._entries[response.id] = StoredResponse(response, tuple(messages), self.clock())
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None when unknown, evicted or expired."""
        self._expire()
        return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        """Forget a response; False when it was not there."""
        self._expire()
        return self._entries.pop(response_id, None) is not None

    def _expire(self) -> None:
        """Drop the entries older than the time to live (the oldest come first)."""
        if self.ttl_s is None:
            return
        limit = self.clock() - self.ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.stored_at > limit:
                return
            self._entries.popitem(last=False)
