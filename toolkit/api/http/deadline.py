"""Per-request deadlines (``server.request_timeout``): past it the generation is aborted.

Aborting means closing the engine streams, which frees the request's KV pages. Before
anything was sent the client gets a 408; a stream already under way ends with an error
event instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from toolkit.api.http.errors import APIError

T = TypeVar("T")


def timed_out(timeout: float) -> APIError:
    """The OpenAI-shaped 408."""
    return APIError(f"The request did not finish within the server's {timeout:g} s deadline",
                    status=408, code="request_timeout")


@dataclass(frozen=True)
class Deadline:
    """A request's deadline on the event loop's clock (``at`` None: no deadline)."""

    timeout: float | None
    """The configured seconds, for the error message."""
    at: float | None
    """Loop time the request must be done by."""

    @classmethod
    def after(cls, timeout: float | None) -> Deadline:
        """The deadline ``timeout`` seconds from now."""
        now = asyncio.get_running_loop().time()
        return cls(timeout, None if timeout is None else now + timeout)

    def _remaining(self) -> float | None:
        if self.at is None:
            return None
        return max(self.at - asyncio.get_running_loop().time(), 0.0)

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work``, cancelling it and raising the 408 when the deadline passes."""
        try:
            return await asyncio.wait_for(work, self._remaining())
        except TimeoutError:
            raise timed_out(self.timeout) from None

    async def stream(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items`` until the deadline; then ``items`` is closed and the 408 raised."""
        try:
            while True:
                try:
                    item = await self.run(anext(items))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await items.aclose()
