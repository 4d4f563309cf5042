"""image_url content parts over HTTP against a served tiny random VLM (Idefics3): a data:
PNG works and its image tokens count in usage; a broken image, bad base64 or an http URL
while fetching is off is a 400; an image over the size limits a 413; with fetching on, a
local HTTP server's PNG works and a non-image content type is a 400; a text-only model
given an image part is a 400 naming it."""

from __future__ import annotations

import base64
import http.server
import threading

import pytest
from api_client import assert_error, open_client
from tiny_vlm import build_vlm_runtime, data_url, png_bytes, random_image, save_tiny_vlm

from toolkit.config.schema import MediaConfig, ServerConfig

MAX_IMAGE_BYTES = 20000


@pytest.fixture(scope="module")
def vlm_engine(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-vlm-api")
    save_tiny_vlm(directory)
    runtime = build_vlm_runtime(directory)
    runtime.engine.start()
    yield runtime.engine
    runtime.engine.shutdown()


@pytest.fixture
async def served(vlm_engine):
    """``await served(**media_fields)`` -> an ApiClient over the VLM engine."""
    apps = []

    async def make(**media):
        config = ServerConfig(media=MediaConfig(max_image_bytes=MAX_IMAGE_BYTES, **media))
        app, client = await open_client(vlm_engine, config)
        apps.append(app)
        return client

    yield make
    for app in apps:
        await app.stop()


def _body(url: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": url}}]}],
        "max_tokens": 4, "temperature": 0, **extra}


PARAM = "messages[0].content[1].image_url"


def _expected_prompt_tokens(engine, image) -> int:
    tokenizer = engine.tokenizer
    text = tokenizer.render_chat([{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"}, {"type": "image"}]}])
    expanded, _ = tokenizer.images.expand(text, [image])
    return len(tokenizer.encode(expanded))


async def test_data_png_is_answered_and_its_image_tokens_counted(served, vlm_engine):
    api = await served()
    image = random_image(50, 30, seed=1)
    reply = await api.post("/v1/chat/completions", _body(data_url(image)))
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    expected = _expected_prompt_tokens(vlm_engine, image)
    assert body["usage"]["prompt_tokens"] == expected > 4 * 5  # 4 tiles + global, 4 each
    again = await api.post("/v1/chat/completions", _body(data_url(image)))
    assert again.json()["choices"][0]["message"] == body["choices"][0]["message"]
    stream = await api.post("/v1/chat/completions", _body(data_url(image), stream=True))
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in stream.chunks() if c["choices"])
    assert text == body["choices"][0]["message"]["content"]


@pytest.mark.parametrize("url, code", [
    ("data:image/png;base64," + base64.b64encode(b"not a png at all").decode(),
     "invalid_image"),
    ("data:image/png;base64,%%%not-base64%%%", "invalid_image"),
    ("data:text/plain;base64,aGVsbG8=", "invalid_image"),
    ("http://127.0.0.1:9/cat.png", "image_fetch_disabled"),
    ("ftp://example.com/cat.png", "invalid_value"),
])
async def test_unusable_images_are_400(served, url: str, code: str):
    api = await served()
    reply = await api.post("/v1/chat/completions", _body(url))
    assert_error(reply, 400, param=PARAM, code=code)


async def test_images_over_the_limits_are_413(served):
    api = await served()
    big = random_image(120, 120, seed=2)  # random pixels: a PNG of ~40 kB
    assert len(png_bytes(big)) > MAX_IMAGE_BYTES
    reply = await api.post("/v1/chat/completions", _body(data_url(big)))
    assert_error(reply, 413, param=PARAM, code="image_too_large")
    tight = await served(max_image_pixels=32 * 32)
    reply = await tight.post("/v1/chat/completions", _body(data_url(random_image(40, 40))))
    assert_error(reply, 413, param=PARAM, code="image_too_large")


async def test_images_with_options_that_move_the_prompt_are_400(served):
    api = await served()
    reply = await api.post("/v1/chat/completions",
                           _body(data_url(random_image(20, 20)), truncate_prompt_tokens=8))
    assert_error(reply, 400, param="truncate_prompt_tokens")


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, bytes]] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        content_type, data = self.routes.get(self.path, ("text/plain", b""))
        self.send_response(200 if self.path in self.routes else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server():
    """A loopback HTTP server: /cat.png, /page.html (text/html), /big.png (too large)."""
    _ImageHandler.routes = {
        "/cat.png": ("image/png", png_bytes(random_image(50, 30, seed=1))),
        "/page.html": ("text/html", b"<html></html>"),
        "/big.png": ("image/png", png_bytes(random_image(120, 120, seed=2))),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_fetching_when_allowed_has_type_size_and_status_limits(served, image_server):
    api = await served(allow_fetch=True, fetch_timeout_s=5.0)
    fetched = await api.post("/v1/chat/completions", _body(f"{image_server}/cat.png"))
    assert fetched.status == 200, fetched.text
    inline = await api.post("/v1/chat/completions",
                            _body(data_url(random_image(50, 30, seed=1))))
    assert fetched.json()["choices"][0]["message"] == inline.json()["choices"][0]["message"]
    assert fetched.json()["usage"] == inline.json()["usage"]
    reply = await api.post("/v1/chat/completions", _body(f"{image_server}/page.html"))
    assert_error(reply, 400, param=PARAM, code="invalid_image")
    reply = await api.post("/v1/chat/completions", _body(f"{image_server}/big.png"))
    assert_error(reply, 413, param=PARAM, code="image_too_large")
    reply = await api.post("/v1/chat/completions", _body(f"{image_server}/missing.png"))
    assert_error(reply, 400, param=PARAM, code="image_fetch_failed")


async def test_text_only_model_given_an_image_is_400_naming_it(fake_served, fake_engine):
    api = await fake_served(fake_engine)
    reply = await api.post("/v1/chat/completions", _body(data_url(random_image(20, 20))))
    error = assert_error(reply, 400, param=PARAM, code="images_not_supported")
    assert "`fake`" in error["message"]


async def test_tokenize_refuses_image_parts_it_cannot_expand(served):
    api = await served()
    body = _body(data_url(random_image(20, 20)))
    reply = await api.post("/tokenize", {"messages": body["messages"]})
    assert_error(reply, 400, param=PARAM, code="unsupported_parameter")


async def test_text_only_chat_to_the_vlm_renders_through_its_parts_template(served, vlm_engine):
    api = await served()
    reply = await api.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 2,
        "temperature": 0})
    assert reply.status == 200, reply.text
    text = vlm_engine.tokenizer.render_chat(
        [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}])
    assert text == "<|im_start|>User: Hello there<end_of_utterance>\nAssistant:"
    assert reply.json()["usage"]["prompt_tokens"] == len(vlm_engine.tokenizer.encode(text))
