"""Which data-parallel replica serves a request: by prefix-cache affinity, then by load.

A request's leading pages of prompt tokens (``page_size`` tokens each, hashed as a chain,
so page k's hash stands for pages 1..k) remember the replica they were last sent to; that
replica holds their KV pages in its prefix cache. A new request goes to the replica of its
longest remembered prefix unless that replica has more than ``max_imbalance`` requests in
flight beyond the least busy one (SGLang's router bounds the imbalance the same way);
otherwise, and for prompts shorter than a page, to the least busy replica (ties: the one
sent the fewest requests so far, then the lowest index). Pure Python, no Ray.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence

MAX_PREFIX_ENTRIES = 1 << 16
"""Most page hashes remembered (least recently routed forgotten first)."""
MAX_PREFIX_PAGES = 64
"""Most leading pages of a prompt hashed (longer prompts share their first pages)."""


def prefix_hashes(prompt_token_ids: Sequence[int], page_size: int,
                  max_pages: int = MAX_PREFIX_PAGES) -> list[int]:
    """One hash per full leading page: hash k covers pages 1..k (a chain)."""
    hashes, previous = [], 0
    num_pages = min(len(prompt_token_ids) // page_size, max_pages)
    for page in range(num_pages):
        previous = hash((previous, tuple(prompt_token_ids[page * page_size:
                                                          (page + 1) * page_size])))
        hashes.append(previous)
    return hashes


class Router:
    """Routing state of one endpoint: in-flight and total requests per replica and the
    replica each remembered prefix was last sent to."""

    def __init__(self, num_replicas: int, page_size: int, max_imbalance: int,
                 max_prefix_entries: int = MAX_PREFIX_ENTRIES) -> None:
        if num_replicas < 1 or page_size < 1 or max_imbalance < 0:
            raise ValueError(f"Router({num_replicas}, {page_size}, {max_imbalance}): needs "
                             "num_replicas >= 1, page_size >= 1, max_imbalance >= 0")
        self.page_size = page_size
        self.max_imbalance = max_imbalance
        self.max_prefix_entries = max_prefix_entries
        self.num_in_flight = [0] * num_replicas
        """Requests sent to each replica and not yet finished."""
        self.num_routed = [0] * num_replicas
        """Requests ever sent to each replica."""
        self.num_affinity_hits = 0
        """Requests sent to the replica holding their prefix."""
        self._prefixes: OrderedDict[int, int] = OrderedDict()
        """Page-chain hash -> the replica it was last sent to (LRU order)."""

    @property
    def num_replicas(self) -> int:
        return len(self.num_in_flight)

    def choose(self, prompt_token_ids: Sequence[int], available: Collection[int]) -> int:
        """The replica for this prompt among ``available`` (non-empty), counted as one
        more in flight there until ``finished``; its pages now point at it."""
        if not available:
            raise ValueError("no replica is available")
        hashes = prefix_hashes(prompt_token_ids, self.page_size)
        least = min(available, key=lambda r: (self.num_in_flight[r], self.num_routed[r], r))
        replica = self._holder(hashes, available)
        if (replica is not None and self.num_in_flight[replica]
                <= self.num_in_flight[least] + self.max_imbalance):
            self.num_affinity_hits += 1
        else:
            replica = least
        self._remember(hashes, replica)
        self.num_in_flight[replica] += 1
        self.num_routed[replica] += 1
        return replica

    def finished(self, replica: int) -> None:
        """A request chosen for ``replica`` ended (finished, failed or aborted)."""
        self.num_in_flight[replica] = max(0, self.num_in_flight[replica] - 1)

    def forget(self, replica: int) -> None:
        """``replica`` lost its cache (it restarted): drop the prefixes pointing at it."""
        for key in [k for k, r in self._prefixes.items() if r == replica]:
            del self._prefixes[key]

    def _holder(self, hashes: list[int], available: Collection[int]) -> int | None:
        """The available replica of the longest remembered prefix, or None."""
        for key in reversed(hashes):
            replica = self._prefixes.get(key)
            if replica is not None and replica in available:
                return replica
        return None

    def _remember(self, hashes: list[int], replica: int) -> None:
        for key in hashes:
            self._prefixes[key] = replica
            self._prefixes.move_to_end(key)
        while len(self._prefixes) > self.max_prefix_entries:
            self._prefixes.popitem(last=False)
