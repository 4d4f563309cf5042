"""Data parallelism on a local Ray instance: two replica actors of a tiny Llama behind one
DataParallelEngine. Requests spread over both and answer what one engine does; a shared
prefix lands on the replica that holds it; a killed replica fails only its own in-flight
requests (EngineDeadError, the API's 503), the other keeps serving, and Ray brings the
killed one back."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from tiny_checkpoint import write_tiny_llama

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.guided.errors import GuidedSpecError
from toolkit.protocol import GuidedSpec, SamplingParams
from toolkit.protocol.errors import EngineDeadError
from toolkit.runtime import build_runtime

ray = pytest.importorskip("ray")

PAGE = 4
COMEBACK_TIMEOUT_S = 120


def _config(model_dir, *overrides: str):
    return compose_config([
        "device=cpu", f"model.path={model_dir}", "model.dtype=float32",
        "model.max_model_len=256", "cache.num_pages=256", f"cache.page_size={PAGE}",
        "device.num_threads=2", *overrides])


def _prompt(i: int, length: int = 6) -> list[int]:
    return [(7 * i + 3 * j) % 60 + 2 for j in range(length)]


async def _run(engine, request_id: str, prompt: list[int], max_tokens: int = 8,
               started: asyncio.Event | None = None) -> list[int]:
    """The request's greedy tokens through ``engine``."""
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    tokens: list[int] = []
    async for output in engine.generate(request_id, prompt, params):
        tokens += output.new_token_ids
        if started is not None:
            started.set()
    return tokens


def _routed(engine) -> list[int]:
    return [replica["num_routed"] for replica in engine.replica_stats()]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def dp_runtime(tiny_model):
    """Two replicas on a local Ray instance of 2 CPUs (one each)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runtime = build_runtime(_config(tiny_model, "parallel.data_parallel_size=2"))
    runtime.engine.start()
    yield runtime
    runtime.close()
    ray.shutdown()


@pytest.mark.slow  # starts Ray and two replica actors
def test_requests_spread_and_answer_what_one_engine_does(tiny_model, dp_runtime):
    engine = dp_runtime.engine
    assert dp_runtime.core is None and dp_runtime.resolved.parallel_layout == "DP 2 (ray)"
    assert ray.available_resources().get("CPU", 0) < 1  # each replica holds its CPU
    prompts = [_prompt(i) for i in range(8)]
    before = _routed(engine)

    async def run_all():
        return await asyncio.gather(*(_run(engine, f"spread{i}", p)
                                      for i, p in enumerate(prompts)))

    served = asyncio.run(run_all())
    counts = [after - b for after, b in zip(_routed(engine), before)]
    print(f"requests per replica: {counts}")
    assert counts == [4, 4]
    vectors = asyncio.run(engine.embed([prompts[0], prompts[1]]))
    single = build_runtime(_config(tiny_model))
    try:
        single.engine.start()
        expected_vectors = asyncio.run(single.engine.embed([prompts[0], prompts[1]]))
        single.engine.shutdown()
        core = single.core
        params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
        for i, prompt in enumerate(prompts):
            core.add_request(f"one{i}", prompt, params)
        expected = {f"one{i}": [] for i in range(len(prompts))}
        while core.has_unfinished:
            for output in core.step():
                expected[output.request_id] += output.new_token_ids
    finally:
        single.close()
    assert served == [expected[f"one{i}"] for i in range(len(prompts))]
    assert torch.allclose(torch.tensor(vectors), torch.tensor(expected_vectors), atol=1e-5)
    with pytest.raises(GuidedSpecError) as refused:  # compiled in a replica, raised here
        asyncio.run(engine.validate_guided(GuidedSpec("json", "{not json",
                                                      param="response_format")))
    assert refused.value.param == "response_format"
    stats = engine.stats()
    assert stats["num_replicas_up"] == 2 and stats["healthy"]


@pytest.mark.slow
def test_a_shared_prefix_lands_on_the_replica_that_holds_it(dp_runtime):
    engine = dp_runtime.engine
    prefix = [40 + (i % 17) for i in range(3 * PAGE)]  # three full pages
    before = _routed(engine)
    asyncio.run(_run(engine, "warm", prefix + [5]))
    home = next(r for r, (a, b) in enumerate(zip(_routed(engine), before)) if a > b)
    before, hits = _routed(engine), engine.router.num_affinity_hits
    cached = _prefix_cache_hits(engine)

    async def shared():
        return await asyncio.gather(*(_run(engine, f"shared{i}", prefix + [6 + i, 9])
                                      for i in range(6)))

    asyncio.run(shared())
    counts = [after - b for after, b in zip(_routed(engine), before)]
    print(f"shared-prefix requests per replica: {counts} (the prefix is on {home})")
    assert counts[home] == 6 and sum(counts) == 6
    assert engine.router.num_affinity_hits - hits == 6
    # and the replica's prefix cache served the three pages to each of them
    deadline = time.monotonic() + 10
    while (gained := [a - b for a, b in zip(_prefix_cache_hits(engine), cached)])[home] < 72:
        assert time.monotonic() < deadline, f"prefix-cache hit tokens per replica: {gained}"
        time.sleep(0.2)
    print(f"prefix-cache hit tokens per replica: {gained}")
    assert gained[1 - home] == 0


def _prefix_cache_hits(engine) -> list[int]:
    """Prompt tokens each replica's prefix cache served (as last probed)."""
    return [replica["prefix_cache_hits"] for replica in engine.replica_stats()]


@pytest.mark.slow
def test_a_killed_replica_fails_only_its_requests_and_comes_back(dp_runtime):
    engine = dp_runtime.engine

    async def load_then_kill():
        started = [asyncio.Event() for _ in range(6)]
        tasks = [asyncio.create_task(_run(engine, f"load{i}", _prompt(i + 20), 240,
                                          started[i])) for i in range(6)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 60)
        placed = {f"load{i}": engine._requests[f"load{i}"] for i in range(6)}
        victim = engine.replicas[0].actor
        ray.kill(victim, no_restart=False)  # Ray restarts it (max_replica_restarts)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        # while replica 0 restarts, new requests go to replica 1 and finish
        during = await asyncio.gather(*(_run(engine, f"during{i}", _prompt(i + 40))
                                        for i in range(4)))
        return placed, results, during

    before = _routed(engine)
    placed, results, during = asyncio.run(load_then_kill())
    on_victim = [i for i in range(6) if placed[f"load{i}"] == 0]
    assert on_victim and len(on_victim) < 6, placed
    for i, result in enumerate(results):
        if i in on_victim:
            assert isinstance(result, EngineDeadError), result
            assert "replica 0 was lost" in str(result)
        else:
            assert len(result) == 240, result
    assert all(len(tokens) == 8 for tokens in during)
    replicas = engine.replica_stats()
    assert replicas[0]["num_restarts"] == 1
    assert _routed(engine)[0] - before[0] == len(on_victim)  # none of `during` went there

    deadline = time.monotonic() + COMEBACK_TIMEOUT_S
    while not engine.replica_stats()[0]["up"]:
        assert time.monotonic() < deadline, "replica 0 did not come back"
        time.sleep(0.5)
    before = _routed(engine)

    async def after_restart():
        return await asyncio.gather(*(_run(engine, f"after{i}", _prompt(i + 50))
                                      for i in range(4)))

    assert all(len(tokens) == 8 for tokens in asyncio.run(after_restart()))
    counts = [after - b for after, b in zip(_routed(engine), before)]
    print(f"after the restart, requests per replica: {counts}")
    assert counts[0] >= 1 and sum(counts) == 4
    assert engine.healthy and engine.stats()["num_replicas_up"] == 2


@pytest.mark.parametrize("overrides, message", [
    (["parallel.data_parallel_size=2", "parallel.tensor_parallel_size=2",
      "parallel.distributed_executor_backend=ray"], "set parallel.distributed_executor_backend=mp"),
    (["parallel.data_parallel_size=2", "parallel.pipeline_parallel_size=2"],
     "replicas of a pipeline are not built yet"),
    (["parallel.data_parallel_size=0"], "parallel.data_parallel_size=0 must be >= 1"),
    (["parallel.data_parallel_size=2", "parallel.max_replica_restarts=-1"],
     "parallel.max_replica_restarts=-1 must be >= 0"),
    (["parallel.data_parallel_size=2", "lora.enable=true"], "LoRA"),
])
def test_bad_data_parallel_configs_fail_at_compose(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, *overrides)
