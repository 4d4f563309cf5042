"""POST /tokenize, /detokenize and GET /metrics."""

from __future__ import annotations

from api_client import MODEL, assert_error


async def test_tokenize_prompt_and_detokenize_round_trip(api, engine):
    reply = (await api.post("/tokenize", {"model": MODEL, "prompt": "Hello world",
                                          "return_token_strs": True})).json()
    assert reply["tokens"] == engine.tokenizer.encode("Hello world")
    assert reply["count"] == len(reply["tokens"])
    assert reply["max_model_len"] == engine.max_model_len
    assert "".join(reply["token_strs"]).endswith("Hello world")
    back = (await api.post("/detokenize", {"tokens": reply["tokens"]})).json()
    assert back["prompt"].endswith("Hello world")


async def test_tokenize_chat_messages_like_chat_completions(api, engine):
    messages = [{"role": "user", "content": "Hi"}]
    reply = (await api.post("/tokenize", {"messages": messages})).json()
    assert reply["tokens"] == engine.tokenizer.apply_chat_template(messages)


async def test_tokenize_errors(api):
    assert_error(await api.post("/tokenize", {"prompt": 5}), 400, param="prompt")
    assert_error(await api.post("/detokenize", {"tokens": [10 ** 9]}), 400, param="tokens")
    assert_error(await api.post("/tokenize", {"model": "nope", "prompt": "x"}), 404)


async def test_metrics_in_prometheus_text(api):
    await api.post("/v1/completions", {"prompt": "Hi", "max_tokens": 3, "ignore_eos": True})
    reply = await api.get("/metrics")
    assert reply.status == 200 and reply.content_type.startswith("text/plain")
    text = reply.text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total"):
        assert f"# TYPE {name} " in text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(values['vllm:generation_tokens_total{model_name="smollm2"}']) >= 3
    assert float(values['vllm:time_to_first_token_seconds_count{model_name="smollm2"}']) >= 1
    assert float(values['vllm:inter_token_latency_seconds_count{model_name="smollm2"}']) >= 2
    assert 'le="+Inf"' in text
