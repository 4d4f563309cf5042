"""Tensor-parallel workers as Ray actors in a placement group (a local Ray instance):
the same logits and greedy tokens as the whole model."""

from __future__ import annotations

import pytest
import torch
from test_tensor_parallel import _config, _greedy, _logits
from tiny_checkpoint import write_tiny_llama

from toolkit.runtime import build_runtime

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts a local Ray instance and an actor


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_actor_ranks_match_the_whole_model(tmp_path, local_ray):
    model_dir = write_tiny_llama(tmp_path)
    results = []
    for overrides in (["parallel.tensor_parallel_size=1"],
                      ["parallel.tensor_parallel_size=2",
                       "parallel.distributed_executor_backend=ray"]):
        runtime = build_runtime(_config(model_dir, 1, *overrides))
        try:
            results.append((_logits(runtime), _greedy(runtime)))
            if runtime.executor is not None:
                assert runtime.resolved.parallel_layout == "TP 2 (ray, gloo)"
                assert ray.available_resources().get("CPU", 0) < 2  # the actor holds a CPU
        finally:
            runtime.close()
    (whole_logits, whole_tokens), (split_logits, split_tokens) = results
    torch.testing.assert_close(split_logits, whole_logits, atol=1e-5, rtol=1e-5)
    assert split_tokens == whole_tokens
