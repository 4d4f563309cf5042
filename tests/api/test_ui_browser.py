"""The web page in a real browser: headless Chromium (Debian's ``chromium``) loads ``GET /``
from a real uvicorn port over the FakeEngine, takes the API key, streams a chat with
sampling fields and a JSON schema, and shows the dashboard and the configuration.

Chromium is driven over its DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in NUL, read on fd 3 and written on fd 4), so no websocket client is
needed. The screenshot goes to ``$TOOLKIT_UI_SCREENSHOT`` (else the test's tmp_path).
Skipped when ``chromium`` is not on PATH.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fake_engine import DEFAULT_SCRIPT, FakeEngine

from toolkit.api.app import build_app
from toolkit.config.schema import ServerConfig

CHROMIUM = shutil.which("chromium")
KEY = "sk-ui"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
SAMPLING = {"temperature": "0.5", "top_p": "0.9", "top_k": "20", "max_tokens": "64",
            "seed": "7"}

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium on PATH")


class DevTools:
    """One headless Chromium and one page, driven over the DevTools pipe (blocking)."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 860) -> None:
        to_browser, self._writer = _pipe()
        self._reader, from_browser = _pipe()
        flags = ["--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                 "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                 "--mute-audio", f"--window-size={width},{height}"]
        self.log = open(profile.with_name("chromium.log"), "w+b")  # noqa: SIM115
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        # bash (dash takes one-digit fds only) puts the pipe ends on the fds Chromium reads
        # (3) and writes (4).
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}',
             CHROMIUM, *flags, "about:blank"],
            pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL,
            stderr=self.log)  # a file: Chromium's chatter would fill a pipe and block it
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        self.errors: list[str] = []
        """Uncaught exceptions and console.error calls of the page."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        """Send one command (to the page once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._writer, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._note(reply)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{expression!r} stayed falsy; page errors: {self.errors}; "
                           f"body: {self.evaluate('document.body.innerText')!r}")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5.0)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._writer)
        os.close(self._reader)
        self.log.close()

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._reader], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._reader, 1 << 20)
            if not chunk:
                self.log.seek(0)
                stderr = self.log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"chromium closed its DevTools pipe: {stderr}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _note(self, event: dict) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("exception", {})
                               .get("description", str(params)))
        elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description")))
                                        for a in params["args"]))


def _pipe() -> tuple[int, int]:
    """A pipe whose ends sit above fd 100, clear of the 3 and 4 the child needs."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD, 100))
        os.close(fd)
    return ends[0], ends[1]


@pytest.fixture
async def served_ui():
    """(base URL, engine): the app over a slow-ish FakeEngine (30 ms a token, so the page
    sees the answer arrive in pieces) with an API key, behind uvicorn on a loopback port."""
    engine = FakeEngine(delay_s=0.03)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = build_app(engine, ServerConfig(api_keys=[KEY]))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}", engine
    server.should_exit = True
    await task
    sock.close()


def _set(field: str, value: str) -> str:
    """JavaScript typing ``value`` into the input ``field`` (input and change events)."""
    return (f"(() => {{ const e = document.getElementById({json.dumps(field)}); "
            f"e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input')); "
            f"e.dispatchEvent(new Event('change')); return true; }})()")


def _use_the_page(url: str, profile: Path, screenshot: Path) -> dict:
    """Everything a user does, in the browser (a worker thread: the server runs on the
    test's event loop). Returns what the page showed."""
    browser = DevTools(profile)
    try:
        browser.send("Page.navigate", {"url": f"{url}/"})
        browser.wait_for("document.readyState === 'complete'")
        # No key yet: the page loads, its data endpoints refuse.
        refused = browser.wait_for(
            "document.getElementById('config-table').innerText.includes('API key') && "
            "document.getElementById('config-table').innerText")
        browser.evaluate(_set("api-key", KEY))
        browser.wait_for("document.getElementById('model').innerText.includes('fake')")
        for field, value in SAMPLING.items():
            browser.evaluate(_set(field, value))
        browser.evaluate(_set("schema", json.dumps(SCHEMA)))
        # Count the distinct answer lengths the page rendered: more than a couple means
        # the answer arrived and showed in pieces (streamed), not in one go.
        browser.evaluate("""(() => {
            window.seen = new Set();
            new MutationObserver(() => {
              const out = document.querySelector('.msg.assistant');
              if (out) window.seen.add(out.textContent.length);
            }).observe(document.getElementById('messages'),
                       {childList: true, subtree: true, characterData: true});
            return true; })()""")
        browser.evaluate(_set("prompt", "Hello"))
        browser.evaluate("document.getElementById('send').click(), true")
        browser.wait_for("!!document.querySelector('.msg.assistant:not(.streaming)')")
        browser.wait_for("document.getElementById('chat-status').innerText.includes('tokens')")
        browser.wait_for("/generated [1-9]/.test(document.getElementById('s-more').innerText)",
                         timeout=10.0)
        shown = browser.evaluate("""({
            user: document.querySelector('.msg.user').textContent,
            answer: document.querySelector('.msg.assistant').textContent,
            failed: !!document.querySelector('.msg.error'),
            pieces: window.seen.size,
            status: document.getElementById('chat-status').innerText,
            tps: document.getElementById('s-tps').innerText,
            more: document.getElementById('s-more').innerText,
            health: document.getElementById('health').innerText,
            config: document.getElementById('config-table').innerText,
            stored: localStorage.getItem('toolkit.ui.api-key'),
        })""")
        browser.screenshot(screenshot)
        return {**shown, "refused": refused, "errors": browser.errors}
    finally:
        browser.close()


async def test_the_page_streams_a_chat_in_a_real_browser(served_ui, tmp_path):
    url, engine = served_ui
    screenshot = Path(os.environ.get("TOOLKIT_UI_SCREENSHOT") or tmp_path / "ui.png")
    shown = await asyncio.to_thread(_use_the_page, url, tmp_path / "profile", screenshot)

    assert "Invalid or missing API key" in shown["refused"]
    assert shown["errors"] == []
    assert shown["stored"] == KEY
    assert shown["user"] == "Hello"
    assert not shown["failed"] and shown["answer"] == DEFAULT_SCRIPT
    assert shown["pieces"] >= 3, shown  # rendered while streaming
    assert "tok/s" in shown["status"]
    assert float(shown["tps"]) >= 0 and shown["health"] == "healthy"
    assert "max_model_len" in shown["config"] and "<redacted>" in shown["config"]
    assert KEY not in shown["config"]

    [request] = engine.requests  # what the page sent, as the engine received it
    params = request.params
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens,
            params.seed) == (0.5, 0.9, 20, 64, 7)
    assert params.guided is not None and params.guided.kind == "json"
    assert json.loads(params.guided.value) == SCHEMA
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
