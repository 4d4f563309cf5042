"""DataParallelEngine without Ray running: it implements every member of EngineClient with
compatible signatures; replica stats and metrics merge; errors raised in a replica come
back as the same kinds (a GuidedSpecError keeps its param)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from toolkit.api.engine_client import EngineClient
from toolkit.compose import compose_config
from toolkit.engine.metrics import EngineMetrics
from toolkit.guided.errors import GuidedSpecError
from toolkit.parallel.replica_actor import RemoteError, ReplicaInfo, replica_config
from toolkit.parallel.replicas import DataParallelEngine, merge_metrics, merge_stats
from toolkit.protocol.errors import EngineDeadError, EngineOverloadedError

pytest.importorskip("ray")


def _engine(num_replicas: int = 2) -> DataParallelEngine:
    cfg = compose_config(["device=cpu", f"parallel.data_parallel_size={num_replicas}"])
    resolved = SimpleNamespace(max_model_len=256, deterministic=True)
    infos = [ReplicaInfo(resolved, "none", 1000 + i) for i in range(num_replicas)]
    return DataParallelEngine(cfg, [object()] * num_replicas, infos, tokenizer=object())


def test_every_engine_client_member_is_implemented():
    engine = _engine()
    attributes = set(EngineClient.__annotations__)
    methods = {name: value for name, value in vars(EngineClient).items()
               if callable(value) and not name.startswith("_")}
    assert attributes and methods
    for name in attributes:
        assert hasattr(engine, name), name
    for name, declared in methods.items():
        ours = getattr(engine, name)
        theirs = [p for p in inspect.signature(declared).parameters.values()
                  if p.name != "self"]
        mine = inspect.signature(ours).parameters
        assert list(mine)[:len(theirs)] == [p.name for p in theirs], name
        for param in theirs:
            assert mine[param.name].default == param.default, (name, param.name)
        if inspect.iscoroutinefunction(declared):
            assert inspect.iscoroutinefunction(ours), name
    assert inspect.isasyncgenfunction(DataParallelEngine.generate)
    assert engine.healthy and engine.max_model_len == 256 and engine.deterministic
    assert engine.supports_priority is False
    assert [r["num_routed"] for r in engine.replica_stats()] == [0, 0]


def test_routing_refuses_a_used_id_and_a_fleet_that_is_down():
    engine = _engine()
    assert engine._route("a", [1, 2, 3, 4]) in (0, 1)
    with pytest.raises(ValueError, match="already in use"):
        engine._route("a", [1])
    for index in range(2):
        engine._lost(index, RuntimeError("gone"))
    with pytest.raises(EngineDeadError, match="no data-parallel replica is serving"):
        engine._route("b", [1])
    assert engine.healthy  # they may still come back (max_replica_restarts)
    for replica in engine.replicas:
        replica.num_restarts = engine.max_replica_restarts + 1
    assert not engine.healthy


def test_a_replica_config_is_one_engine_with_its_share_of_threads():
    cfg = compose_config(["device=cpu", "parallel.data_parallel_size=2",
                          "device.num_threads=4"])
    one = replica_config(cfg)
    assert one.parallel.data_parallel_size == 1 and one.device.num_threads == 2
    assert one.model == cfg.model and one.cache == cfg.cache


def test_metrics_and_stats_merge():
    a, b = EngineMetrics(), EngineMetrics()
    a.on_token("r", 0.0, 5, 1, 0.02)
    a.on_token("r", 0.0, 5, 1, 0.03)
    b.on_token("s", 0.0, 7, 1, 3.0)
    a.finished_requests["length"] = 1
    b.finished_requests.update(length=2, stop=1)
    merged = merge_metrics([a, b])
    assert (merged.prompt_tokens, merged.generation_tokens) == (12, 3)
    assert merged.finished_requests == {"length": 3, "stop": 1}
    assert merged.ttft.count == 2 and merged.ttft.total == pytest.approx(3.02)
    assert merged.itl.count == 1
    assert [c for _, c in merged.ttft.cumulative()] == [
        x + y for (_, x), (_, y) in zip(a.ttft.cumulative(), b.ttft.cumulative())]
    stats = merge_stats([{"num_running": 2, "kv_cache_usage": 0.5, "healthy": True},
                         {"num_running": 1, "kv_cache_usage": 0.1, "healthy": True}])
    assert stats == {"num_running": 3, "kv_cache_usage": pytest.approx(0.3)}


@pytest.mark.parametrize("error", [
    EngineOverloadedError("queue full"), EngineDeadError("loop died"),
    ValueError("bad prompt"), GuidedSpecError("response_format", "bad schema"),
    KeyError("odd")])
def test_remote_errors_come_back_as_their_kind(error):
    import pickle

    rebuilt = pickle.loads(pickle.dumps(RemoteError.of(error))).rebuild()
    expected = type(error) if not isinstance(error, KeyError) else RuntimeError
    assert type(rebuilt) is expected
    assert str(error) in str(rebuilt) or str(rebuilt) in str(error)
    if isinstance(error, GuidedSpecError):
        assert rebuilt.param == "response_format"


def test_a_data_parallel_runtime_is_not_rebuilt_in_process():
    from toolkit.config.errors import ConfigError
    from toolkit.runtime import Runtime, rebuild_engine

    cfg = compose_config(["device=cpu", "parallel.data_parallel_size=2"])
    runtime = Runtime(cfg, None, None, None, _engine(), None)
    with pytest.raises(ConfigError, match="benchmark with data_parallel_size=1"):
        rebuild_engine(runtime, cfg)


def test_local_replicas_need_a_gpu_each(tmp_path, monkeypatch):
    import torch
    from tiny_checkpoint import write_tiny_llama

    from toolkit.config.errors import ConfigError
    from toolkit.resolve import check_model_fit

    model_dir = write_tiny_llama(tmp_path)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = compose_config([f"model.path={model_dir}", "parallel.data_parallel_size=2",
                          "cache.num_pages=64"])
    with pytest.raises(ConfigError, match="data_parallel_size=2 x tensor_parallel_size=1 needs 2 GPUs but this "
                       "machine has 1 CUDA"):
        check_model_fit(cfg, model_dir, "cuda")
    on_cluster = compose_config([f"model.path={model_dir}", "parallel.data_parallel_size=2",
                                 "cache.num_pages=64", "parallel.ray.address=auto"])
    check_model_fit(on_cluster, model_dir, "cuda")  # the cluster places them
