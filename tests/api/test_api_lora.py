"""LoRA adapters over HTTP on a tiny random Llama with PEFT adapters (the real engine, the
real app): the ``model`` name picks the adapter, /v1/models lists adapters with their
parent, unknown names are OpenAI-shaped 404s, adapters load and unload at run time behind
the admin key, /metrics counts requests per adapter."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import uvicorn
from api_client import open_client
from tiny_lora import ADAPTERS, make_adapter, merged_logits, save_tiny_llama

from toolkit.api.app import build_app
from toolkit.config.schema import ServerConfig

ADMIN = {"Authorization": "Bearer sk-admin"}
PROMPT_IDS = [1, 17, 5, 42, 9, 33, 12, 8]
MAX_TOKENS = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(runtime with adapters "all7" and "qv" served and started, base dir, adapter dirs)."""
    from tiny_lora import build_lora_runtime

    root = tmp_path_factory.mktemp("api-lora")
    base = save_tiny_llama(root / "base")
    adapters = {}
    for seed, name in enumerate(["all7", "qv", "mlp_rslora", "patterned"], start=1):
        adapters[name] = root / name
        make_adapter(base, adapters[name], seed, **ADAPTERS[name])
    runtime = build_lora_runtime(base, {n: adapters[n] for n in ("all7", "qv")},
                                 "model.name=tiny", "lora.max_lora_rank=8")
    runtime.engine.start()
    yield runtime, base, adapters
    runtime.engine.shutdown()


@pytest.fixture
async def client(served):
    app, api = await open_client(served[0].engine, ServerConfig(
        admin_key="sk-admin", allow_runtime_lora_updating=True))
    yield api
    await app.stop()


def _greedy_words(base, adapter_dir) -> str:
    """PEFT's merged model, greedy, as the served text ("w<i>" words)."""
    tokens = list(PROMPT_IDS)
    for _ in range(MAX_TOKENS):
        tokens.append(int(merged_logits(base, adapter_dir, tokens)[-1].argmax()))
    return " ".join(f"w{i}" for i in tokens[len(PROMPT_IDS):])


async def _complete(api, model: str):
    return await api.post("/v1/completions", {"model": model, "prompt": PROMPT_IDS,
                                              "max_tokens": MAX_TOKENS, "temperature": 0,
                                              "ignore_eos": True})


def _words(reply) -> str:
    assert reply.status == 200, reply.text
    return " ".join(reply.json()["choices"][0]["text"].split())


async def test_models_lists_adapters_with_parent(client, served):
    reply = await client.get("/v1/models")
    cards = {card["id"]: card for card in reply.json()["data"]}
    assert list(cards) == ["tiny", "all7", "qv"]
    assert cards["tiny"]["parent"] is None
    assert cards["all7"]["parent"] == "tiny" and cards["all7"]["root"] == str(served[2]["all7"])
    assert (await client.get("/v1/models/qv")).json()["parent"] == "tiny"


async def test_the_model_name_picks_the_adapter(client, served):
    _, base, adapters = served
    texts = {name: _words(await _complete(client, name)) for name in ("tiny", "all7", "qv")}
    assert texts["tiny"] == _greedy_words(base, None)
    assert texts["all7"] == _greedy_words(base, adapters["all7"])
    assert texts["qv"] == _greedy_words(base, adapters["qv"])
    assert len(set(texts.values())) == 3


async def test_unknown_adapter_is_an_openai_404(client):
    reply = await _complete(client, "nope")
    assert reply.status == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "nope" in error["message"]
    assert (await client.get("/v1/models/nope")).status == 404


async def test_load_and_unload_at_run_time(client, served):
    _, base, adapters = served
    body = {"lora_name": "late", "lora_path": str(adapters["patterned"])}
    assert (await client.post("/v1/load_lora_adapter", body)).status == 401  # admin key only
    reply = await client.post("/v1/load_lora_adapter", body, headers=ADMIN)
    assert reply.status == 200, reply.text
    assert "late" in [card["id"] for card in (await client.get("/v1/models")).json()["data"]]
    assert _words(await _complete(client, "late")) == _greedy_words(base, adapters["patterned"])
    again = await client.post("/v1/load_lora_adapter", body, headers=ADMIN)
    assert again.status == 400 and "already loaded" in again.json()["error"]["message"]
    reply = await client.post("/v1/unload_lora_adapter", {"lora_name": "late"}, headers=ADMIN)
    assert reply.status == 200, reply.text
    assert (await _complete(client, "late")).status == 404
    missing = await client.post("/v1/unload_lora_adapter", {"lora_name": "late"},
                                headers=ADMIN)
    assert missing.status == 404 and missing.json()["error"]["code"] == "model_not_found"


async def test_a_bad_adapter_is_a_400_and_disturbs_nothing(client, served, tmp_path):
    _, base, adapters = served
    wide = save_tiny_llama(tmp_path / "wide", hidden_size=96)
    make_adapter(wide, tmp_path / "wide-lora", 9, r=4, lora_alpha=8, target_modules=["q_proj"])
    cases = {str(tmp_path / "wide-lora"): "another base model",
             str(adapters["mlp_rslora"]): "above lora.max_lora_rank=8"}
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "adapter_config.json").write_text("{")
    cases[str(tmp_path / "corrupt")] = "not valid JSON"
    for path, message in cases.items():
        reply = await client.post("/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": path},
                                  headers=ADMIN)
        assert reply.status == 400, reply.text
        assert message in reply.json()["error"]["message"]
        assert reply.json()["error"]["param"] == "lora_path"
    cards = [card["id"] for card in (await client.get("/v1/models")).json()["data"]]
    assert cards == ["tiny", "all7", "qv"]
    assert _words(await _complete(client, "all7")) == _greedy_words(base, adapters["all7"])


async def test_metrics_count_requests_per_adapter(client):
    await _complete(client, "qv")
    text = (await client.get("/metrics", headers=ADMIN)).text
    line = next(line for line in text.splitlines()
                if line.startswith("toolkit:lora_requests_total") and 'lora_name="qv"' in line)
    assert float(line.rsplit(" ", 1)[1]) >= 1


async def test_runtime_updates_are_off_by_default(served):
    app, api = await open_client(served[0].engine, ServerConfig(admin_key="sk-admin"))
    try:
        reply = await api.post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/x"},
                               headers=ADMIN)
        assert reply.status == 404
    finally:
        await app.stop()
    with pytest.raises(ValueError, match="needs server.admin_key"):
        build_app(served[0].engine, ServerConfig(allow_runtime_lora_updating=True))


@pytest.mark.slow  # a real uvicorn server
async def test_loading_while_serving_under_load(served):
    """Over a real socket: streams of the base model and an adapter run while an adapter is
    loaded and unloaded; every stream gets exactly its own tokens."""
    runtime, base, adapters = served
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = build_app(runtime.engine, ServerConfig(admin_key="sk-admin",
                                                 allow_runtime_lora_updating=True))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            async def complete(model: str) -> str:
                reply = await http.post("/v1/completions", json={
                    "model": model, "prompt": PROMPT_IDS, "max_tokens": MAX_TOKENS,
                    "temperature": 0, "ignore_eos": True})
                assert reply.status_code == 200, reply.text
                return " ".join(reply.json()["choices"][0]["text"].split())

            async def churn() -> None:
                for _ in range(3):
                    loaded = await http.post("/v1/load_lora_adapter", headers=ADMIN, json={
                        "lora_name": "churn", "lora_path": str(adapters["qv"])})
                    assert loaded.status_code == 200, loaded.text
                    await http.post("/v1/unload_lora_adapter", headers=ADMIN,
                                    json={"lora_name": "churn"})

            models = ["tiny", "all7", "qv"] * 4
            results = await asyncio.gather(churn(), *(complete(m) for m in models))
        expected = {"tiny": _greedy_words(base, None),
                    "all7": _greedy_words(base, adapters["all7"]),
                    "qv": _greedy_words(base, adapters["qv"])}
        assert results[1:] == [expected[m] for m in models]
    finally:
        server.should_exit = True
        await task
        sock.close()
    assert runtime.engine.lora.num_pinned == 0  # every request released its adapter
