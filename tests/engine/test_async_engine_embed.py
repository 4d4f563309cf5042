"""Embedding jobs on AsyncEngine's loop: batched by the step budget, interleaved with
generation steps, and dropped when their caller goes away."""

from __future__ import annotations

import asyncio

import pytest
from tiny_engine import build_tiny_runtime

from toolkit.engine.async_engine import _batch_end
from toolkit.protocol import SamplingParams


def test_batches_fill_the_token_budget_and_take_one_oversized_prompt_alone():
    prompts = [[1] * 3, [1] * 3, [1] * 3, [1] * 10, [1] * 2]
    assert _batch_end(prompts, 0, 7) == 2
    assert _batch_end(prompts, 2, 7) == 3
    assert _batch_end(prompts, 3, 7) == 4
    assert _batch_end(prompts, 4, 7) == 5


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory, runtime):
    """A started engine over a tiny random model, stepping at most 8 tokens at a time."""
    _, tiny = build_tiny_runtime(tmp_path_factory.mktemp("tiny"), runtime.model_dir,
                                 ["scheduler.max_num_batched_tokens=8"])
    tiny.engine.start()
    yield tiny.engine
    tiny.engine.shutdown()


async def test_generation_advances_between_the_batches_of_a_long_job(tiny_engine):
    num_batches = 5
    prompt = [3, 5, 2, 7]  # two prompts per 8-token batch
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    num_deltas = 0

    async def generate():
        nonlocal num_deltas
        async for _ in tiny_engine.generate("embed-interleave", [4, 6], params):
            num_deltas += 1

    generation = asyncio.create_task(generate())
    await asyncio.sleep(0)  # the generation is queued first
    vectors = await tiny_engine.embed([prompt] * (2 * num_batches))
    deltas_before_embedded = num_deltas
    await generation
    assert len(vectors) == 2 * num_batches
    assert deltas_before_embedded >= num_batches - 1
    assert num_deltas == 10


async def test_a_cancelled_job_is_dropped_and_the_engine_goes_on(engine):
    prompt = engine.tokenizer.encode("A dragon drinks tea.")
    job = asyncio.create_task(engine.embed([prompt] * 64))
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    [vector] = await engine.embed([prompt])
    assert engine.healthy and len(vector) > 0


async def test_bad_jobs_fail_alone(engine):
    with pytest.raises(ValueError, match="pooling"):
        await engine.embed([[1, 2]], pooling="cls")
    with pytest.raises(ValueError, match="token"):
        await engine.embed([[]])
    assert len(await engine.embed([[1, 2, 3]])) == 1


async def test_after_shutdown_embedding_is_refused(tiny_engine):
    """(Last in this file: it stops the module's tiny engine.)"""
    assert len(await tiny_engine.embed([[1, 2]])) == 1
    tiny_engine.shutdown()
    with pytest.raises(RuntimeError, match="not running"):
        await tiny_engine.embed([[1, 2]])
