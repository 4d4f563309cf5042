"""bench.lora_adapters: a workload spread over N LoRA adapters, sent to the engine (by
adapter key) or to a server (as the request's model)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from toolkit.bench.engine_client import EngineClient
from toolkit.bench.http_client import HttpClient
from toolkit.bench.records import RequestRecord
from toolkit.bench.workload import build_workload
from toolkit.compose import compose_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
tiny_lora = pytest.importorskip("tiny_lora")


def test_requests_are_spread_over_the_adapters_round_robin():
    cfg = compose_config(["bench.num_requests=7", "bench.lora_adapters=[a,b,c]"], "bench").bench
    assert [r.lora_name for r in build_workload(cfg)] == ["a", "b", "c", "a", "b", "c", "a"]
    plain = compose_config(["bench.num_requests=3"], "bench").bench
    assert [r.lora_name for r in build_workload(plain)] == [None] * 3


def test_http_requests_name_the_adapter_as_model():
    cfg = compose_config(["bench.num_requests=2", "bench.lora_adapters=[sql]"], "bench").bench
    client = HttpClient(None, "http://x/v1", "base", 0.0, True)
    assert client._body(build_workload(cfg)[0])[1]["model"] == "sql"
    cfg = compose_config(["bench.num_requests=1"], "bench").bench
    assert client._body(build_workload(cfg)[0])[1]["model"] == "base"


@pytest.fixture(scope="module")
def lora_runtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-lora")
    base = tiny_lora.save_tiny_llama(root / "base")
    tiny_lora.make_adapter(base, root / "qv", 1, **tiny_lora.ADAPTERS["qv"])
    runtime = tiny_lora.build_lora_runtime(base, {"qv": root / "qv"})
    runtime.engine.start()
    yield runtime
    runtime.engine.shutdown()


async def test_the_engine_client_runs_each_request_on_its_adapter(lora_runtime):
    cfg = compose_config(["bench.num_requests=4", "bench.lora_adapters=[qv]", "bench.prompt_len=5",
                          "bench.output_len=3"], "bench").bench
    client = EngineClient(lora_runtime.engine, 0.0, True)
    for request in build_workload(cfg):
        record = RequestRecord(start=0.0)
        await client.send(request, record)
        assert record.num_output_tokens == 3
    assert lora_runtime.engine.lora.request_counts() == {"qv": 4}
    unknown = build_workload(compose_config(["bench.num_requests=1", "bench.lora_adapters=[nope]"],
                                            "bench").bench)[0]
    with pytest.raises(ValueError, match=r"'nope' is not a served LoRA adapter; served: "
                                         r"\['qv'\]"):
        await client.send(unknown, RequestRecord(start=0.0))
