"""scheduler.policy=priority admits waiting requests by (priority, arrival)."""

from __future__ import annotations

from toolkit.config.schema import SchedulerConfig
from toolkit.kv.page_manager import PageManager
from toolkit.protocol import Request, SamplingParams
from toolkit.scheduler.scheduler import Scheduler


def admitted(policy: str) -> list[str]:
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=8, policy=policy),
                          PageManager(64, 16), max_model_len=256)
    for i, priority in enumerate([5, 0, 5, -1]):
        scheduler.add_request(Request(f"r{i}", [1, 2, 3], SamplingParams(), float(i),
                                      priority=priority))
    return [item.request.request_id for item in scheduler.schedule().scheduled]


def test_priority_policy_orders_by_priority_then_arrival():
    assert admitted("priority") == ["r3", "r1", "r0", "r2"]


def test_fcfs_ignores_priority():
    assert admitted("fcfs") == ["r0", "r1", "r2", "r3"]
