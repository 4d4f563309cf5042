"""The web page at ``GET /`` and its /ui/ routes over the scripted FakeEngine (fast tier):
content types, the static files shipping, server.ui=false, and the keys."""

from __future__ import annotations

import fnmatch
import pathlib

import pytest
from api_client import assert_error
from fake_engine import DEFAULT_SCRIPT, FakeEngine

import toolkit
import toolkit.api.ui
from toolkit.api.http.errors import error_type
from toolkit.api.ui.serving import REDACTED, STATIC_TYPES

STATIC = pathlib.Path(toolkit.api.ui.__file__).parent / "static"
PYPROJECT = pathlib.Path(toolkit.__file__).parents[1] / "pyproject.toml"
PAGES = {"/": ("index.html", "text/html"), "/ui/app.js": ("app.js", "text/javascript"),
         "/ui/app.css": ("app.css", "text/css")}
"""Path -> (static file, content type)."""
DATA = ("/ui/stats", "/ui/config")
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


def check(reply, status: int, **fields) -> dict:
    return assert_error(reply, status, type_=error_type(status), **fields)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------- the page and its files


@pytest.mark.parametrize("path", PAGES)
async def test_page_and_static_files_are_served_with_their_types(fake_api, path):
    name, content_type = PAGES[path]
    reply = await fake_api.get(path)
    assert reply.status == 200
    assert reply.content_type == f"{content_type}; charset=utf-8"
    assert reply.headers.get_first(b"cache-control") == b"no-cache"
    assert reply.headers.get_first(b"x-content-type-options") == b"nosniff"
    assert reply.text == (STATIC / name).read_text()


async def test_the_page_links_its_own_files_under_a_strict_policy(fake_api):
    html = (await fake_api.get("/")).text
    assert '<script src="ui/app.js" defer></script>' in html
    assert '<link rel="stylesheet" href="ui/app.css">' in html
    csp = (await fake_api.get("/")).headers.get_first(b"content-security-policy").decode()
    assert "default-src 'self'" in csp and "script-src" not in csp  # no inline, no CDN
    for element in ("api-key", "prompt", "send", "messages", "schema", "s-running", "s-waiting",
                    "s-kv", "s-tps", "config-table", *("temperature", "top_p", "top_k",
                                                      "max_tokens", "seed")):
        assert f'id="{element}"' in html


def test_static_files_use_no_third_party_url_and_ship_in_the_wheel():
    files = sorted(p.name for p in STATIC.iterdir())
    assert files == sorted(STATIC_TYPES)
    for name in files:
        assert "://" not in (STATIC / name).read_text(), name  # relative URLs only
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["toolkit.api.ui"]
    for name in files:
        assert any(fnmatch.fnmatch(f"static/{name}", p) for p in patterns), name


async def test_a_wrong_method_on_the_page_is_405(fake_api):
    reply = await fake_api.post("/", {})
    check(reply, 405)
    assert reply.headers.get_first(b"allow") == b"GET"


# ---------------------------------------------------------------- the data endpoints


async def test_stats_report_the_engine_and_its_counters(fake_api):
    before = (await fake_api.get("/ui/stats")).json()
    assert before["num_running"] == 0 and before["num_waiting"] == 0
    assert before["kv_cache_usage"] == 0.0 and before["healthy"] is True
    assert before["generation_tokens"] == 0 and before["ttft_mean_s"] is None
    assert (await fake_api.post("/v1/chat/completions", CHAT)).status == 200
    after = (await fake_api.get("/ui/stats")).json()
    assert after["generation_tokens"] == 5 and after["prompt_tokens"] > 0
    assert after["finished_requests"] == {"length": 1}
    assert after["ttft_mean_s"] >= 0 and after["itl_mean_s"] >= 0
    assert after["time_s"] >= before["time_s"]
    assert after["spec_num_draft_tokens"] == 0 and after["spec_acceptance_rate"] == 0.0


async def test_stats_follow_a_dead_engine(fake_api, fake_engine):
    fake_engine.healthy = False
    assert (await fake_api.get("/ui/stats")).json()["healthy"] is False


async def test_config_reports_what_the_server_knows(fake_served):
    api = await fake_served(FakeEngine(max_model_len=512, deterministic=False),
                            served_model_name=["smol", "gpt-4o"], max_n=4)
    reply = await api.get("/ui/config")
    assert reply.status == 200 and reply.content_type.startswith("application/json")
    body = reply.json()
    assert body["version"] == toolkit.__version__
    assert body["model"] == "smol" and body["served_model_name"] == ["smol", "gpt-4o"]
    assert body["engine_model_name"] == "fake" and body["max_model_len"] == 512
    assert body["deterministic"] is False and body["supports_priority"] is False
    assert body["vocab_size"] > 0
    server = body["server"]
    assert server["ui"] is True and server["max_n"] == 4 and server["port"] == 8000
    assert server["chat"]["tool_parser"] == "hermes"
    assert server["api_keys"] == [] and server["admin_key"] is None


# ---------------------------------------------------------------- server.ui=false


@pytest.mark.parametrize("path", [*PAGES, *DATA])
async def test_ui_off_answers_404(fake_served, path):
    api = await fake_served(FakeEngine(), ui=False)
    check(await api.get(path), 404, code="not_found")
    assert (await api.get("/health")).status == 200


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("path", PAGES)
async def test_the_page_loads_without_a_key(fake_served, path):
    api = await fake_served(FakeEngine(), api_keys=["sk-one"], admin_key="adm")
    assert (await api.get(path)).status == 200


@pytest.mark.parametrize("path", DATA)
async def test_data_endpoints_need_an_api_key(fake_served, path):
    api = await fake_served(FakeEngine(), api_keys=["sk-one", "sk-two"])
    for headers in (None, bearer("wrong"), {"Authorization": "sk-one"}):
        reply = await api.get(path, headers=headers)
        check(reply, 401, code="invalid_api_key")
        assert reply.headers.get_first(b"www-authenticate") == b"Bearer"
    for key in ("sk-one", "sk-two"):
        assert (await api.get(path, headers=bearer(key))).status == 200


async def test_with_an_admin_key_stats_need_it_and_config_takes_either(fake_served):
    api = await fake_served(FakeEngine(), api_keys=["sk-one"], admin_key="adm")
    check(await api.get("/ui/stats", headers=bearer("sk-one")), 401)
    assert (await api.get("/ui/stats", headers=bearer("adm"))).status == 200
    assert (await api.get("/metrics", headers=bearer("adm"))).status == 200  # same rule
    for key in ("sk-one", "adm"):
        assert (await api.get("/ui/config", headers=bearer(key))).status == 200
    check(await api.get("/ui/config"), 401)


async def test_an_admin_key_alone_guards_both(fake_served):
    api = await fake_served(FakeEngine(), admin_key="adm")
    for path in DATA:
        check(await api.get(path), 401)
        assert (await api.get(path, headers=bearer("adm"))).status == 200


async def test_config_never_shows_the_keys(fake_served):
    api = await fake_served(FakeEngine(), api_keys=["sk-secret-1", "sk-secret-2"],
                            admin_key="adm-secret")
    reply = await api.get("/ui/config", headers=bearer("sk-secret-1"))
    assert "secret" not in reply.text
    server = reply.json()["server"]
    assert server["api_keys"] == [REDACTED, REDACTED] and server["admin_key"] == REDACTED


async def test_the_chat_the_page_sends_streams(fake_api):
    """The body app.js builds (sampling fields, json_schema, include_usage) is accepted
    and streamed."""
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True},
            "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 1, "max_tokens": 64,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "ui", "schema": {"type": "object"}}}}
    chunks = (await fake_api.post("/v1/chat/completions", body)).chunks()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == DEFAULT_SCRIPT
    assert chunks[-1]["usage"]["completion_tokens"] > 0
