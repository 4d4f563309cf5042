"""The FakeEngine itself: it implements every member of ``EngineClient`` and
``TokenizerClient`` with compatible signatures, and its streams follow the real engine's
rules (deltas, final delta, stops, abort, failures), so the fast API tests can trust it."""

from __future__ import annotations

import inspect

import pytest
from fake_engine import DEFAULT_SCRIPT, Failure, FakeEngine, FakeTokenizer

from toolkit.api.engine_client import EngineClient, TokenizerClient
from toolkit.protocol import GuidedSpec, RequestOutput, SamplingParams

TOKENIZER = FakeTokenizer()
SCRIPT_IDS = TOKENIZER.encode(DEFAULT_SCRIPT, add_special_tokens=False)
PROMPT = TOKENIZER.encode("Hi there")


def protocol_members(protocol: type) -> tuple[set[str], dict[str, object]]:
    """(attribute names, methods by name) a Protocol declares."""
    attributes = set(protocol.__annotations__)
    methods = {name: value for name, value in vars(protocol).items()
               if callable(value) and not name.startswith("_")}
    return attributes, methods


@pytest.mark.parametrize("protocol, implementation", [
    (EngineClient, FakeEngine()), (TokenizerClient, FakeTokenizer())])
def test_every_protocol_member_is_implemented(protocol, implementation):
    attributes, methods = protocol_members(protocol)
    assert attributes and methods
    for name in attributes:
        assert hasattr(implementation, name), name
    for name, declared in methods.items():
        ours = getattr(implementation, name)
        assert callable(ours), name
        theirs = inspect.signature(declared).parameters
        mine = inspect.signature(ours).parameters
        expected = [p for p in theirs.values() if p.name != "self"]
        assert list(mine)[:len(expected)] == [p.name for p in expected], name
        for param in expected:
            assert mine[param.name].default == param.default, (name, param.name)
        assert all(p.default is not inspect.Parameter.empty
                   for p in list(mine.values())[len(expected):]), name
        if inspect.iscoroutinefunction(declared):
            assert inspect.iscoroutinefunction(ours), name
    assert inspect.isasyncgenfunction(FakeEngine.generate)  # as AsyncEngine.generate


def test_engine_client_declares_what_the_fake_was_written_for():
    """A new protocol member must be added to the fake (and to this list)."""
    attributes, methods = protocol_members(EngineClient)
    assert attributes == {"model_name", "max_model_len", "deterministic", "healthy",
                          "tokenizer", "supports_priority", "metrics"}
    assert set(methods) == {"stats", "abort", "validate_guided", "generate", "embed"}
    attributes, methods = protocol_members(TokenizerClient)
    assert attributes == {"vocab_size", "chat_template", "eos_token_ids"}
    assert set(methods) == {"encode", "decode", "token_strings", "convert_ids_to_tokens",
                            "render_chat"}


def test_tokenizer_is_lossless():
    for text in ("Hello world!", "a🐉b", "<|im_start|>user\nx<|im_end|>", "", "ünïcødé"):
        ids = TOKENIZER.encode(text)
        assert TOKENIZER.decode(ids, skip_special_tokens=False) == text
        assert all(0 <= t < TOKENIZER.vocab_size for t in ids)
    assert TOKENIZER.decode(TOKENIZER.encode("<|im_start|>Hi<|im_end|>")) == "Hi"
    assert TOKENIZER.token_strings(TOKENIZER.encode("Hello world")) == ["Hello", " world"]
    assert TOKENIZER.token_strings(TOKENIZER.encode("🐉")) == ["\ufffd"] * 4
    assert len(SCRIPT_IDS) == 19


async def run(engine: FakeEngine, params: SamplingParams, request_id: str = "r",
              prompt: list[int] = PROMPT) -> list[RequestOutput]:
    return [output async for output in engine.generate(request_id, prompt, params)]


async def test_one_token_per_delta_and_a_final_delta():
    engine = FakeEngine()
    outputs = await run(engine, SamplingParams(max_tokens=4))
    assert [o.new_token_ids for o in outputs] == [[t] for t in SCRIPT_IDS[:4]]
    assert [o.num_output_tokens for o in outputs] == [1, 2, 3, 4]
    assert all(o.num_prompt_tokens == len(PROMPT) for o in outputs)
    assert [o.finish_reason for o in outputs] == [None, None, None, "length"]
    assert "".join(o.new_text for o in outputs) == TOKENIZER.decode(SCRIPT_IDS[:4])
    assert all(o.logprobs is None and o.error is None for o in outputs)
    assert engine.stats()["num_running"] == 0 and engine.aborted == []
    assert engine.metrics.finished_requests == {"length": 1}


async def test_eos_stops_unless_ignored_and_min_tokens_defers_it():
    engine = FakeEngine(script="Hi")
    hi, eos = TOKENIZER.id_of("Hi"), TOKENIZER.eos_token_ids[0]
    outputs = await run(engine, SamplingParams(max_tokens=10))
    assert [o.new_token_ids for o in outputs] == [[hi], [eos]]
    assert outputs[-1].finish_reason == "stop" and outputs[-1].new_text == ""
    outputs = await run(engine, SamplingParams(max_tokens=10, min_tokens=3))
    assert outputs[-1].num_output_tokens == 4 and outputs[-1].finish_reason == "stop"
    outputs = await run(engine, SamplingParams(max_tokens=5, ignore_eos=True))
    assert outputs[-1].finish_reason == "length"
    assert "".join(o.new_text for o in outputs) == "HiHiHi"


async def test_stop_strings_are_held_back_and_cut():
    engine = FakeEngine()
    outputs = await run(engine, SamplingParams(max_tokens=50, stop=(" lazy cat", " fox")))
    text = "".join(o.new_text for o in outputs)
    assert text == DEFAULT_SCRIPT[:DEFAULT_SCRIPT.index(" fox")]
    assert outputs[-1].finish_reason == "stop"
    # while running, the last len(" lazy cat") - 1 characters are held back
    sent = 0
    for output in outputs[:-1]:
        sent += len(output.new_text)
        shown = TOKENIZER.decode([t for o in outputs[:outputs.index(output) + 1]
                                  for t in o.new_token_ids])
        assert sent == max(len(shown) - 8, 0)


async def test_logprobs_and_prompt_logprobs():
    engine = FakeEngine()
    outputs = await run(engine, SamplingParams(max_tokens=3, logprobs=2, prompt_logprobs=1))
    assert [len(o.logprobs) for o in outputs] == [1, 1, 1]
    assert all(o.logprobs[0].token_id == o.new_token_ids[0] for o in outputs)
    assert all(len(o.logprobs[0].top) == 2 and o.logprobs[0].rank == 1 for o in outputs)
    assert outputs[-1].cumulative_logprob == pytest.approx(
        sum(o.logprobs[0].logprob for o in outputs))
    first, *rest = outputs
    assert first.prompt_logprobs[0] is None and len(first.prompt_logprobs) == len(PROMPT)
    assert all(o.prompt_logprobs is None for o in rest)


async def test_abort_ends_a_read_stream_with_an_abort_delta():
    engine = FakeEngine()
    stream = engine.generate("r", PROMPT, SamplingParams(max_tokens=50))
    first = await anext(stream)
    assert first.finish_reason is None and engine.stats()["num_running"] == 1
    engine.abort("r")
    last = await anext(stream)
    assert last == RequestOutput("r", [], "", "abort")
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert engine.aborted == ["r"] and engine.metrics.finished_requests == {"abort": 1}


async def test_leaving_a_stream_early_aborts_the_request():
    engine = FakeEngine()
    stream = engine.generate("r", PROMPT, SamplingParams(max_tokens=50))
    await anext(stream)
    await stream.aclose()
    assert engine.aborted == ["r"] and engine.stats()["num_streams"] == 0
    assert engine.metrics.finished_requests == {"abort": 1}


async def test_admission_errors():
    engine = FakeEngine()
    stream = engine.generate("r", PROMPT, SamplingParams())
    await anext(stream)
    with pytest.raises(ValueError, match="already in use"):
        await anext(engine.generate("r", PROMPT, SamplingParams()))
    await stream.aclose()
    [output] = await run(engine, SamplingParams(), request_id="empty", prompt=[])
    assert output.finish_reason == "abort" and output.error == "the prompt has no tokens"
    engine.healthy = False
    with pytest.raises(RuntimeError, match="not running"):
        await run(engine, SamplingParams(), request_id="dead")
    assert [r.request_id for r in engine.requests] == ["r", "empty"]


async def test_failures():
    engine = FakeEngine()
    engine.failure = Failure(after=2, error="device lost", request_suffix="-1")
    ok = await run(engine, SamplingParams(max_tokens=3), request_id="x-0")
    assert ok[-1].finish_reason == "length"
    failed = await run(engine, SamplingParams(max_tokens=3), request_id="x-1")
    assert [o.error for o in failed] == [None, None, "device lost"]
    assert failed[-1].finish_reason == "abort" and failed[-1].new_token_ids == []
    engine.failure = Failure(raises=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await run(engine, SamplingParams(), request_id="y-0")
    assert engine.metrics.finished_requests == {"length": 1, "error": 2}


async def test_validate_guided():
    engine = FakeEngine()
    await engine.validate_guided(GuidedSpec("json", '{"type": "object"}'))
    await engine.validate_guided(GuidedSpec("regex", "a+", param="guided_regex"))
    with pytest.raises(ValueError) as info:
        await engine.validate_guided(GuidedSpec("regex", "(", param="guided_regex"))
    assert info.value.param == "guided_regex"


async def test_embed():
    engine = FakeEngine(hidden_size=4)
    [last, mean] = [await engine.embed([PROMPT], pooling) for pooling in ("last", "mean")]
    assert len(last[0]) == 4 and last != mean
    with pytest.raises(ValueError):
        await engine.embed([[]])
    with pytest.raises(ValueError):
        await engine.embed([PROMPT], pooling="cls")
