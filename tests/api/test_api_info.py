"""GET /v1/models, /health, /version, and routing errors."""

from __future__ import annotations

from api_client import MODEL, assert_error

import toolkit


async def test_models_lists_the_served_model(api, engine):
    reply = await api.get("/v1/models")
    assert reply.status == 200
    body = reply.json()
    assert body["object"] == "list"
    assert len(body["data"]) == 1
    card = body["data"][0]
    assert card["id"] == MODEL == engine.model_name
    assert card["object"] == "model"
    assert card["owned_by"] == "toolkit"
    assert card["max_model_len"] == engine.max_model_len
    assert card["deterministic"] is True  # the default CPU route is batch-invariant
    assert isinstance(card["created"], int)


async def test_model_retrieve(api, engine):
    reply = await api.get(f"/v1/models/{MODEL}")
    assert reply.status == 200
    card = reply.json()
    assert card["id"] == MODEL and card["object"] == "model" and card["root"] == MODEL
    assert card["max_model_len"] == engine.max_model_len
    assert_error(await api.get("/v1/models/gpt-4o"), 404, type_="not_found_error",
                 param="model", code="model_not_found")


async def test_health_ok_while_engine_runs(api):
    reply = await api.get("/health")
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}


async def test_health_503_when_engine_died(api, engine, monkeypatch):
    monkeypatch.setattr(engine, "healthy", False)
    assert_error(await api.get("/health"), 503, type_="server_error")


async def test_generation_503_when_engine_died(api, engine, monkeypatch, chat_body):
    monkeypatch.setattr(engine, "healthy", False)
    reply = await api.post("/v1/chat/completions", chat_body())
    assert_error(reply, 503, type_="server_error", code="engine_unavailable")


async def test_version(api):
    reply = await api.get("/version")
    assert reply.status == 200
    assert reply.json() == {"version": toolkit.__version__, "deterministic": True}


async def test_unknown_route_is_openai_404(api):
    assert_error(await api.get("/v1/nope"), 404, type_="not_found_error", code="not_found")
    assert_error(await api.post("/v1/audio/speech", {"input": "x"}), 404, type_="not_found_error")


async def test_wrong_method_is_openai_405(api):
    reply = await api.get("/v1/chat/completions")
    assert_error(reply, 405, type_="invalid_request_error", code="method_not_allowed")
    assert reply.headers.get_first(b"allow") == b"POST"
    assert_error(await api.request("DELETE", "/v1/models"), 405)
    assert_error(await api.post("/health", {}), 405)
