"""The data-parallel router (pure Python): load spreads requests, a shared prefix sticks
to the replica that holds it, a bounded imbalance overrides the affinity."""

from __future__ import annotations

import pytest

from toolkit.parallel.router import Router, prefix_hashes

PAGE = 4


def _prompt(prefix: int, num_pages: int, tail: int = 0) -> list[int]:
    """``num_pages`` pages that depend only on ``prefix``, then ``tail`` distinct tokens."""
    return [prefix * 100 + i for i in range(num_pages * PAGE)] + [7000 + i for i in range(tail)]


def test_prefix_hashes_chain_full_pages_only():
    prompt = list(range(10))
    hashes = prefix_hashes(prompt, PAGE)
    assert len(hashes) == 2  # 10 tokens: two full pages
    assert prefix_hashes(prompt[:8] + [99, 98], PAGE) == hashes  # the tail does not count
    assert prefix_hashes([0, 1, 2, 3, 9, 9, 9, 9], PAGE)[0] == hashes[0]
    assert prefix_hashes([0, 1, 2, 3, 9, 9, 9, 9], PAGE)[1] != hashes[1]
    assert prefix_hashes([9, 1, 2, 3, 4, 5, 6, 7], PAGE)[1] != hashes[1]  # chained
    assert prefix_hashes(list(range(400)), PAGE, max_pages=3) == prefix_hashes(
        list(range(12)), PAGE)


def test_unrelated_requests_spread_evenly():
    router = Router(3, PAGE, max_imbalance=8)
    chosen = [router.choose(_prompt(i, 2), range(3)) for i in range(9)]
    assert router.num_in_flight == [3, 3, 3]
    assert chosen[:3] == [0, 1, 2]
    for replica in chosen:
        router.finished(replica)
    assert router.num_in_flight == [0, 0, 0] and router.num_routed == [3, 3, 3]


def test_finished_requests_make_room():
    router = Router(2, PAGE, max_imbalance=0)
    first = router.choose([1], [0, 1])
    second = router.choose([2], [0, 1])
    assert {first, second} == {0, 1}
    router.finished(second)
    assert router.choose([3], [0, 1]) == second


def test_shared_prefix_sticks_to_its_replica():
    router = Router(2, PAGE, max_imbalance=8)
    router.choose(_prompt(1, 1), [0, 1])  # someone else's request on replica 0
    home = router.choose(_prompt(5, 3, tail=2), [0, 1])
    assert home == 1  # least busy at first sight
    router.finished(0)
    followers = [router.choose(_prompt(5, 3, tail=3 + i), [0, 1]) for i in range(5)]
    assert followers == [home] * 5
    assert router.num_affinity_hits == 5
    longer = router.choose(_prompt(5, 3) + list(range(8)), [0, 1])
    assert longer == home  # matches on its first three pages


def test_longest_remembered_prefix_wins():
    router = Router(2, PAGE, max_imbalance=8)
    base = _prompt(3, 1)
    router.choose(base, [0])  # page 1 -> replica 0
    extended = base + [500, 501, 502, 503]
    router.choose(extended, [1])  # pages 1..2 -> replica 1 (and page 1 too now)
    assert router.choose(extended + [9], [0, 1]) == 1


def test_imbalance_bound_overrides_affinity():
    router = Router(2, PAGE, max_imbalance=2)
    home = router.choose(_prompt(4, 2), [0, 1])
    placed = [router.choose(_prompt(4, 2, tail=i + 1), [0, 1]) for i in range(6)]
    # the home replica takes followers until it is 2 ahead of the other, then they spill
    assert placed[:2] == [home, home]
    assert router.num_in_flight[home] - router.num_in_flight[1 - home] <= 2 + 1
    assert 1 - home in placed


def test_unavailable_replicas_are_avoided_and_forgotten():
    router = Router(2, PAGE, max_imbalance=8)
    prompt = _prompt(6, 2)
    home = router.choose(prompt, [0, 1])
    other = 1 - home
    assert router.choose(prompt, [other]) == other  # home is down: affinity moves
    router.forget(other)
    assert router.choose(_prompt(6, 2, tail=1), [0, 1]) in (0, 1)
    with pytest.raises(ValueError, match="no replica"):
        router.choose(prompt, [])


def test_forget_drops_only_that_replicas_prefixes():
    router = Router(2, PAGE, max_imbalance=8)
    a, b = _prompt(1, 2), _prompt(2, 2)
    ra, rb = router.choose(a, [0, 1]), router.choose(b, [0, 1])
    assert ra != rb
    router.forget(ra)
    assert router._holder(prefix_hashes(a, PAGE), [0, 1]) is None
    assert router._holder(prefix_hashes(b, PAGE), [0, 1]) == rb


def test_prefix_table_is_bounded():
    router = Router(2, PAGE, max_imbalance=8, max_prefix_entries=5)
    for i in range(10):
        router.choose(_prompt(i, 2), [0, 1])
    assert len(router._prefixes) == 5


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="num_replicas >= 1"):
        Router(0, PAGE, 1)
