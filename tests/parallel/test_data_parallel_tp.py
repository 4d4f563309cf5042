"""Data parallelism over tensor parallelism on a local Ray instance: two replica actors,
each splitting the tiny Llama over two local ranks (DP 2 x TP 2), answer what one whole
engine does."""

from __future__ import annotations

import asyncio

import pytest
from served_tiny import whole_model_tokens
from test_data_parallel import _config, _prompt, _routed, _run
from tiny_checkpoint import write_tiny_llama

from toolkit.runtime import build_runtime

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts Ray, two replica actors and their worker ranks


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_replicas_of_two_ranks_answer_what_one_engine_does(tmp_path, local_ray):
    model_dir = write_tiny_llama(tmp_path)
    prompts = [_prompt(i) for i in range(4)]
    runtime = build_runtime(_config(model_dir, "parallel.data_parallel_size=2",
                                    "parallel.tensor_parallel_size=2"))
    try:
        assert runtime.resolved.parallel_layout == "DP 2 (ray) x TP 2 (mp, gloo)"
        runtime.engine.start()

        async def run_all():
            return await asyncio.gather(*(_run(runtime.engine, f"r{i}", p)
                                          for i, p in enumerate(prompts)))

        served = asyncio.run(run_all())
        assert _routed(runtime.engine) == [2, 2]
    finally:
        runtime.close()
    assert served == whole_model_tokens(_config(model_dir), prompts, max_tokens=8)
