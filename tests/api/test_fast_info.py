"""The non-generation endpoints over the scripted FakeEngine: /v1/models, /health, /version,
/tokenize, /detokenize, /v1/embeddings, /metrics, served names, templates, Kobold (no model,
fast tier)."""

from __future__ import annotations

import asyncio
import base64
import math
import re
import struct

import pytest
from api_client import assert_error
from fake_engine import DEFAULT_SCRIPT, FakeEngine, FakeTokenizer

import toolkit
from toolkit.api.http.errors import error_type

MODEL = "fake"
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
TOKENIZER = FakeTokenizer()
TEXTS = ["Hello world", "The lazy dog.", "a🐉b"]


def check(reply, status: int, **fields) -> dict:
    return assert_error(reply, status, type_=error_type(status), **fields)


# -------------------------------------------------------------- models, health, version


async def test_models_lists_the_served_model(fake_api):
    reply = await fake_api.get("/v1/models")
    assert reply.status == 200 and reply.content_type.startswith("application/json")
    body = reply.json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert {"id", "object", "created", "owned_by", "max_model_len", "deterministic"} <= set(card)
    assert card["id"] == MODEL and card["object"] == "model" and card["owned_by"] == "toolkit"
    assert card["max_model_len"] == 256 and card["deterministic"] is True
    assert isinstance(card["created"], int)


async def test_served_model_name_aliases(fake_served, fake_engine):
    api = await fake_served(fake_engine, served_model_name=["smol", "gpt-4o"])
    assert [m["id"] for m in (await api.get("/v1/models")).json()["data"]] == ["smol", "gpt-4o"]
    reply = await api.post(CHAT, {"model": "gpt-4o", "max_tokens": 1,
                                  "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.json()["model"] == "gpt-4o"  # the asked name is echoed, as vLLM does
    reply = await api.post(CHAT, {"max_tokens": 1, "messages": [{"role": "user",
                                                                 "content": "Hi"}]})
    assert reply.json()["model"] == "smol"  # no name asked: the first one
    check(await api.post(CHAT, {"model": MODEL, "messages": [{"role": "user",
                                                              "content": "Hi"}]}), 404)


async def test_health_and_version(fake_api, fake_engine):
    reply = await fake_api.get("/health")
    assert reply.status == 200 and reply.json() == {"status": "ok"}
    reply = await fake_api.get("/version")
    assert reply.json() == {"version": toolkit.__version__, "deterministic": True}
    fake_engine.deterministic = False
    assert (await fake_api.get("/version")).json()["deterministic"] is False
    assert (await fake_api.get("/v1/models")).json()["data"][0]["deterministic"] is False


async def test_openapi_document(fake_api):
    reply = await fake_api.get("/openapi.json")
    assert reply.status == 200
    paths = reply.json()["paths"]
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(paths)


# ------------------------------------------------------------- tokenize and detokenize


async def test_tokenize_prompt_and_detokenize_round_trip(fake_api):
    reply = (await fake_api.post("/tokenize", {"model": MODEL, "prompt": "Hello world!",
                                               "return_token_strs": True})).json()
    assert reply == {"count": 3, "max_model_len": 256,
                     "tokens": TOKENIZER.encode("Hello world!"),
                     "token_strs": ["Hello", " world", "!"]}
    back = (await fake_api.post("/detokenize", {"tokens": reply["tokens"]})).json()
    assert back == {"prompt": "Hello world!"}


async def test_tokenize_messages_like_chat_completions(fake_api, fake_engine):
    messages = [{"role": "user", "content": "Hi"}]
    tokens = (await fake_api.post("/tokenize", {"messages": messages})).json()["tokens"]
    assert TOKENIZER.decode(tokens, skip_special_tokens=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    await fake_api.post(CHAT, {"messages": messages, "max_tokens": 1})
    assert fake_engine.requests[0].prompt_token_ids == tokens


async def test_detokenize_keeps_special_tokens(fake_api):
    ids = TOKENIZER.encode("<|im_start|>Hi<|im_end|>")
    assert len(ids) == 3
    reply = (await fake_api.post("/detokenize", {"tokens": ids})).json()
    assert reply == {"prompt": "<|im_start|>Hi<|im_end|>"}


async def test_tokenize_errors(fake_api):
    check(await fake_api.post("/tokenize", {"prompt": 5}), 400, param="prompt")
    check(await fake_api.post("/detokenize", {"tokens": [TOKENIZER.vocab_size]}), 400,
          param="tokens")
    check(await fake_api.post("/detokenize", {"tokens": [-1]}), 400, param="tokens[0]")
    check(await fake_api.post("/tokenize", {"model": "nope", "prompt": "x"}), 404)


# ------------------------------------------------------------------------- embeddings


async def test_embeddings_shape_and_vectors(fake_api, fake_engine):
    reply = await fake_api.post(EMBEDDINGS, {"model": MODEL, "input": TEXTS})
    assert reply.status == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert re.match(r"^embd-[0-9a-f]{32}$", body["id"])
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    prompts = [TOKENIZER.encode(t) for t in TEXTS]
    for data, prompt in zip(body["data"], prompts, strict=True):
        assert len(data["embedding"]) == fake_engine.hidden_size
        assert math.isclose(sum(x * x for x in data["embedding"]), 1.0, rel_tol=1e-9)
        assert data["embedding"] == pytest.approx(fake_engine.vector(prompt))
    num_tokens = sum(len(p) for p in prompts)
    assert body["usage"] == {"prompt_tokens": num_tokens, "total_tokens": num_tokens}
    assert fake_engine.embed_calls == [(prompts, "last", True)]


async def test_embeddings_of_ids_equal_embeddings_of_text(fake_api):
    ids = TOKENIZER.encode(TEXTS[1])
    by_text = (await fake_api.post(EMBEDDINGS, {"input": TEXTS[1]})).json()["data"]
    by_ids = (await fake_api.post(EMBEDDINGS, {"input": ids})).json()["data"]
    by_lists = (await fake_api.post(EMBEDDINGS, {"input": [ids, ids[:2]]})).json()["data"]
    assert by_ids == by_text
    assert by_lists[0]["embedding"] == by_text[0]["embedding"]
    assert by_lists[1]["embedding"] != by_text[0]["embedding"]


async def test_embeddings_base64_is_little_endian_float32(fake_api):
    floats = (await fake_api.post(EMBEDDINGS, {"input": "Hi"})).json()["data"][0]["embedding"]
    encoded = (await fake_api.post(EMBEDDINGS, {"input": "Hi", "encoding_format": "base64"})
               ).json()["data"][0]["embedding"]
    raw = base64.b64decode(encoded)
    assert len(raw) == 4 * len(floats)
    assert list(struct.unpack(f"<{len(floats)}f", raw)) == pytest.approx(floats, rel=1e-6)


async def test_embedding_pooling_follows_the_server_config(fake_served, fake_engine):
    from toolkit.config.schema import EmbeddingConfig

    api = await fake_served(fake_engine,
                            embedding=EmbeddingConfig(pooling="mean", normalize=False))
    vector = (await api.post(EMBEDDINGS, {"input": "Hello world"})).json()["data"][0]
    assert fake_engine.embed_calls[-1][1:] == ("mean", False)
    ids = TOKENIZER.encode("Hello world")
    assert vector["embedding"] == pytest.approx(fake_engine.vector(ids, "mean", False))


@pytest.mark.parametrize("fields, param", [
    ({"input": []}, "input"), ({"input": ""}, "input"), ({"input": [[]]}, "input"),
    ({"input": [99999999]}, "input"), ({"input": [-1]}, "input"),
    ({"encoding_format": "int8"}, "encoding_format"),
    ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
])
async def test_bad_embedding_input_names_the_param(fake_api, fake_engine, fields, param):
    check(await fake_api.post(EMBEDDINGS, {"input": "Hi", **fields}), 400, param=param)
    assert fake_engine.embed_calls == []


async def test_too_long_embedding_input(fake_api):
    ids = [5] * 257
    check(await fake_api.post(EMBEDDINGS, {"input": ids}), 400, param="input",
          code="context_length_exceeded")
    reply = await fake_api.post(EMBEDDINGS, {"input": ids, "truncate_prompt_tokens": 8})
    assert reply.json()["usage"]["prompt_tokens"] == 8


# ----------------------------------------------------------------------------- metrics


async def test_metrics_count_what_the_engine_did(fake_api):
    reply = await fake_api.post("/v1/completions", {"prompt": "Hi", "max_tokens": 3})
    assert reply.status == 200
    await fake_api.post("/v1/completions", {"prompt": "Hi", "max_tokens": 30})
    reply = await fake_api.get("/metrics")
    assert reply.status == 200 and reply.content_type.startswith("text/plain")
    text = reply.text
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "prompt_tokens_total", "generation_tokens_total", "request_success_total"):
        assert f"# TYPE vllm:{name} " in text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    label = f'{{model_name="{MODEL}"}}'
    num_script = len(TOKENIZER.encode(DEFAULT_SCRIPT)) + 1
    assert float(values[f"vllm:generation_tokens_total{label}"]) == 3 + num_script
    assert float(values[f"vllm:prompt_tokens_total{label}"]) == 2
    assert float(values[f"vllm:num_requests_running{label}"]) == 0
    assert float(values[f"vllm:time_to_first_token_seconds_count{label}"]) == 2
    assert float(values[f"vllm:inter_token_latency_seconds_count{label}"]) == 2 + num_script - 1
    finished = 'vllm:request_success_total{finished_reason="%s",model_name="fake"}'
    assert float(values[finished % "length"]) == 1 and float(values[finished % "stop"]) == 1
    assert 'le="+Inf"' in text


async def test_metrics_parse_as_prometheus_text(fake_served, fake_engine):
    from prometheus_client.parser import text_string_to_metric_families

    api = await fake_served(fake_engine)
    other = await fake_served(FakeEngine())  # a second app: its own registry, no clash
    reply = await api.post("/v1/completions", {"prompt": "Hi", "max_tokens": 3})
    assert reply.status == 200
    reply = await api.get("/metrics")
    assert reply.status == 200
    assert reply.content_type.startswith("text/plain; version=")
    families = {family.name: family for family in text_string_to_metric_families(reply.text)}

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        wanted = {"model_name": MODEL, **labels}
        [found] = [s.value for s in families[family].samples
                   if s.name == (sample or family) and s.labels == wanted]
        return found

    assert families["vllm:prompt_tokens"].type == "counter"
    assert value("vllm:prompt_tokens", "vllm:prompt_tokens_total") == len(TOKENIZER.encode("Hi"))
    assert value("vllm:generation_tokens", "vllm:generation_tokens_total") == 3
    assert value("vllm:request_success", "vllm:request_success_total",
                 finished_reason="length") == 1
    assert families["vllm:num_requests_running"].type == "gauge"
    assert value("vllm:num_requests_running") == 0
    assert value("vllm:num_requests_waiting") == 0
    assert value("vllm:kv_cache_usage_perc") == 0
    ttft = families["vllm:time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    assert value(ttft.name, ttft.name + "_count") == 1
    assert value(ttft.name, ttft.name + "_bucket", le="+Inf") == 1
    itl = "vllm:inter_token_latency_seconds"
    assert value(itl, itl + "_count") == 2 and value(itl, itl + "_sum") >= 0
    drafts = "vllm:spec_decode_num_draft_tokens"
    assert value(drafts, drafts + "_total") == 0
    assert value("toolkit:spec_decode_acceptance_rate") == 0
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= set(families)
    # The other app's engine did nothing, and its scrape says so.
    other_text = (await other.get("/metrics")).text
    assert 'vllm:generation_tokens_total{model_name="fake"} 0.0' in other_text


# ---------------------------------------------------------------------- chat templates


async def test_server_and_request_chat_templates(fake_served, fake_engine):
    template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
    api = await fake_served(fake_engine, chat_template=template)
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    assert (await api.post(CHAT, body)).status == 200
    per_request = ("{% for m in messages %}{{ m['name'] or m['role'] }}: {{ m['content'] }}"
                   "{% endfor %}{% for d in documents %}[{{ d['title'] }}]{% endfor %}"
                   "{{ greeting }}")
    reply = await api.post(CHAT, {
        "messages": [{"role": "user", "content": "hi", "name": "ann"}], "max_tokens": 1,
        "chat_template": per_request, "chat_template_kwargs": {"greeting": "Bot:"},
        "documents": [{"title": "doc1", "text": "x"}]})
    assert reply.status == 200, reply.text
    server, request = (TOKENIZER.decode(r.prompt_token_ids) for r in fake_engine.requests)
    assert server == "<Hi>"
    assert request == "ann: hi[doc1]Bot:"


async def test_a_model_without_template_needs_one(fake_served):
    engine = FakeEngine(tokenizer=FakeTokenizer(chat_template=None))
    api = await fake_served(engine)
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    check(await api.post(CHAT, body), 400, param="messages")
    reply = await api.post(CHAT, {**body, "chat_template": "{{ messages[0]['content'] }}"})
    assert reply.status == 200, reply.text


# ------------------------------------------------------------------------------- kobold


async def test_kobold_generate_stream_and_token_count(fake_served, fake_engine):
    api = await fake_served(fake_engine, kobold_api=True)
    body = {"prompt": "Hello", "max_context_length": 64, "max_length": 5, "temperature": 0}
    reply = await api.post("/api/v1/generate", body)
    assert reply.status == 200, reply.text
    assert reply.json() == {"results": [{"text": "Hello world! I am"}]}
    assert fake_engine.requests[0].params.max_tokens == 5
    assert fake_engine.requests[0].params.temperature == 0.0
    stream = await api.post("/api/extra/generate/stream", body)
    assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
    assert stream.text == "".join(f'event: message\ndata: {{"token":"{t}"}}\n\n'
                                  for t in TOKENIZER.token_strings(
                                      TOKENIZER.encode(DEFAULT_SCRIPT)[:5]))
    count = (await api.post("/api/extra/tokencount", {"prompt": "Hello world"})).json()
    assert count == {"value": 2, "ids": TOKENIZER.encode("Hello world")}
    assert (await api.get("/api/v1/config/max_context_length")).json() == {"value": 256}


async def test_kobold_default_bad_words_read_the_whole_vocabulary(fake_served, fake_engine):
    api = await fake_served(fake_engine, kobold_api=True)
    body = {"prompt": "Hello", "max_context_length": 64, "max_length": 2,
            "use_default_badwordsids": True}
    assert (await api.post("/api/v1/generate", body)).status == 200
    banned = fake_engine.requests[0].params.bad_words_token_ids
    bracket_bytes = {TOKENIZER.encode(c)[0] for c in "[]"}
    assert set(banned) == {(t,) for t in (*bracket_bytes, *TOKENIZER.eos_token_ids)}


async def test_kobold_check_and_abort_a_running_generate(fake_served):
    engine = FakeEngine(delay_s=0.005, script="Hi", end_with_eos=False)
    api = await fake_served(engine, kobold_api=True)
    body = {"prompt": "Hello", "max_context_length": 256, "max_length": 200, "genkey": "K1",
            "temperature": 0}
    task = asyncio.create_task(api.post("/api/v1/generate", body))
    while engine.metrics.generation_tokens < 3:
        await asyncio.sleep(0.005)
    so_far = (await api.post("/api/extra/generate/check", {"genkey": "K1"})).json()
    assert so_far["results"][0]["text"].startswith("HiHiHi")
    assert (await api.post("/api/extra/abort", {"genkey": "K1"})).json() == {}
    reply = await task
    assert reply.status == 200, reply.text
    text = reply.json()["results"][0]["text"]
    assert text.startswith(so_far["results"][0]["text"]) and len(text) < 2 * 200
    assert engine.aborted == ["K1-0"]
    assert engine.metrics.finished_requests == {"abort": 1}
