"""Request fields at their edges, through the real app and engine, while a steady normal
request keeps running: no input gets a 5xx, every error is OpenAI-shaped, the server stays
healthy, the steady request's text never changes, and no per-request state is left."""

from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import CHAT, chat, idle_state, server_thread

from toolkit.config.schema import ServerConfig

pytestmark = pytest.mark.slow

INT64 = 2**63
EDGE_INTS = st.sampled_from([-2 * INT64, -INT64 - 1, -INT64, -2**31, -1, 0, 1, 2, 49151, 49152,
                             2**31, 2**53, INT64 - 1, INT64, 2 * INT64])
EDGE_FLOATS = st.one_of(
    st.sampled_from([-1e308, -2.0, -1.0, -1e-9, 0.0, 1e-9, 0.5, 1.0, 2.0, 100.0, 1e308,
                     math.inf, -math.inf, math.nan]),
    st.floats(allow_nan=True, allow_infinity=True))
TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
"""Any code points: control characters too, and lone surrogates (JSON-escaped)."""
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}
FIELDS = {
    "max_tokens": st.sampled_from([-1, 0, 1, 2, 3]),
    "min_tokens": st.sampled_from([-1, 0, 1, 2, 5]),
    "temperature": EDGE_FLOATS,
    "top_p": EDGE_FLOATS,
    "top_k": EDGE_INTS,
    "min_p": EDGE_FLOATS,
    "top_a": EDGE_FLOATS,
    "tfs": EDGE_FLOATS,
    "typical_p": EDGE_FLOATS,
    "eta_cutoff": EDGE_FLOATS,
    "epsilon_cutoff": EDGE_FLOATS,
    "smoothing_factor": EDGE_FLOATS,
    "smoothing_curve": EDGE_FLOATS,
    "presence_penalty": EDGE_FLOATS,
    "frequency_penalty": EDGE_FLOATS,
    "repetition_penalty": EDGE_FLOATS,
    "seed": EDGE_INTS,
    "n": st.sampled_from([-1, 0, 1, 2, 17]),
    "logprobs": st.booleans(),
    "top_logprobs": EDGE_INTS,
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=5)),
    "stop_token_ids": st.lists(EDGE_INTS, max_size=3),
    "logit_bias": st.dictionaries(st.one_of(EDGE_INTS.map(str), TEXT), EDGE_FLOATS,
                                  max_size=3),
    "allowed_token_ids": st.lists(EDGE_INTS, max_size=3),
    "bad_words": st.lists(TEXT, max_size=3),
    "guided_regex": st.sampled_from(["", "(", "[a-z]{1,3}", "a*", "\\d+", "(?<=x)y"]),
    "guided_choice": st.lists(TEXT, max_size=3),
    "truncate_prompt_tokens": EDGE_INTS,
    "include_stop_str_in_output": st.booleans(),
    "ignore_eos": st.booleans(),
    "stream": st.booleans(),
    "best_of": st.sampled_from([-1, 0, 1, 2, 3, 17]),
    "prompt_logprobs": st.sampled_from([-1, 0, 1, 21]),
    "tools": st.sampled_from([[], [WEATHER_TOOL], [{"type": "function"}],
                              [{"type": "function", "function": {"name": "x",
                                                                 "parameters": {"type": 3}}}]]),
    "tool_choice": st.sampled_from(["auto", "none", "required", "bogus",
                                    {"type": "function", "function": {"name": "get_weather"}},
                                    {"type": "function", "function": {"name": "missing"}}]),
    "response_format": st.sampled_from([
        {"type": "text"}, {"type": "json_object"}, {"type": "bogus"},
        {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
        {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": 7}}}]),
}
BODIES = st.fixed_dictionaries({}, optional=FIELDS).flatmap(
    lambda fields: st.builds(lambda content: chat(content, **fields), TEXT))
"""A chat body with any subset of the edge fields (max_tokens is always small)."""
KOBOLD_FIELDS = {
    "n": st.sampled_from([-1, 0, 1, 2, 17]),
    "rep_pen": EDGE_FLOATS, "temperature": EDGE_FLOATS, "top_k": EDGE_INTS,
    "top_a": EDGE_FLOATS, "top_p": EDGE_FLOATS, "min_p": EDGE_FLOATS, "tfs": EDGE_FLOATS,
    "eps_cutoff": EDGE_FLOATS, "eta_cutoff": EDGE_FLOATS, "typical": EDGE_FLOATS,
    "smoothing_factor": EDGE_FLOATS, "smoothing_curve": EDGE_FLOATS,
    "stop_sequence": st.lists(TEXT, max_size=3), "sampler_seed": EDGE_INTS,
    "use_default_badwordsids": st.booleans(),
}
TOKEN_IDS = st.lists(EDGE_INTS, max_size=4)
OTHER_ROUTES = st.one_of(
    st.tuples(st.just("/api/v1/generate"), st.fixed_dictionaries(
        {"prompt": TEXT, "max_length": st.sampled_from([-1, 0, 1, 4]),
         "max_context_length": st.sampled_from([-1, 0, 1, 64, INT64])},
        optional=KOBOLD_FIELDS)),
    st.tuples(st.just("/v1/embeddings"), st.fixed_dictionaries(
        {"input": st.one_of(TEXT, st.lists(TEXT, max_size=3), TOKEN_IDS,
                            st.lists(TOKEN_IDS, max_size=3))},
        optional={"encoding_format": st.sampled_from(["float", "base64", "bogus"]),
                  "dimensions": EDGE_INTS, "truncate_prompt_tokens": EDGE_INTS})),
    st.tuples(st.just("/tokenize"), st.one_of(
        st.fixed_dictionaries({"prompt": TEXT}, optional={"add_special_tokens": st.booleans()}),
        st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "bogus"]), "content": TEXT}),
            max_size=3)}))),
    st.tuples(st.just("/detokenize"), st.fixed_dictionaries({"tokens": TOKEN_IDS})),
)
"""(path, body) for the Kobold, embeddings and tokenizer routes, fields at their edges."""
STEADY = chat("Count from one to twenty.", max_tokens=12)
NUM_EXAMPLES = int(os.environ.get("TOOLKIT_FUZZ_EXAMPLES", "300"))
"""Hypothesis examples; a long run: TOOLKIT_FUZZ_EXAMPLES=10000."""
REPORT = os.environ.get("TOOLKIT_FUZZ_REPORT")
"""Where to write the running counts (JSON) of a long run; unset: nowhere."""


class Counts:
    """Replies by route and status, and 4xx by route and the field they name; written to
    REPORT as they grow."""

    def __init__(self) -> None:
        self.requests = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.params: collections.Counter[str] = collections.Counter()
        self.steady_replies = 0
        """Replies the steady request got meanwhile (all the same text, checked after)."""

    def add(self, path: str, status: int, body: dict) -> None:
        self.requests += 1
        self.statuses[f"{path} {status}"] += 1
        if status >= 400:
            self.params[f"{path} {body.get('error', {}).get('param')}"] += 1
        if REPORT and self.requests % 250 == 0:
            self.write()

    def write(self) -> None:
        pathlib.Path(REPORT).write_text(json.dumps({
            "requests": self.requests, "steady_replies": self.steady_replies,
            "statuses": dict(self.statuses),
            "4xx_by_param": dict(self.params.most_common())}, indent=1))


class SteadyRequests:
    """Sends the same greedy request over and over in a thread; records each reply."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.replies: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SteadyRequests:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        with httpx.Client(timeout=120.0) as client:
            while not self._stop.is_set():
                reply = client.post(self.url + CHAT, json=STEADY)
                content = reply.json()["choices"][0]["message"]["content"] if (
                    reply.status_code == 200) else reply.text
                self.replies.append((reply.status_code, content))


@pytest.fixture(scope="module")
def live_url(engine):
    with server_thread(engine, ServerConfig(request_timeout=60.0, kobold_api=True)) as url:
        yield url


def test_edge_inputs_never_break_the_server_or_other_requests(engine, live_url):
    with httpx.Client(timeout=120.0) as client:
        expected = client.post(live_url + CHAT, json=STEADY).json()
        expected = (200, expected["choices"][0]["message"]["content"])

        counts = Counts()

        @settings(max_examples=NUM_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request=st.one_of(BODIES.map(lambda body: (CHAT, body)), OTHER_ROUTES))
        def send(request: tuple[str, dict]) -> None:
            path, body = request
            reply = client.post(live_url + path, content=json.dumps(body),  # NaN, Infinity too
                                headers={"content-type": "application/json"})
            assert reply.status_code < 500, (body, reply.text)
            error = reply.json() if reply.status_code >= 400 else {}
            if reply.status_code >= 400:
                assert set(error) == {"error"}, reply.text
            assert "engine_error" not in reply.text, (body, reply.text)
            counts.add(path, reply.status_code, error)

        with SteadyRequests(live_url) as steady:
            send()
        if REPORT:
            counts.steady_replies = len(steady.replies)
            counts.write()
        assert steady.replies and all(r == expected for r in steady.replies), steady.replies
        assert client.get(live_url + "/health").status_code == 200
    assert engine.healthy
    assert not any(wait_until_idle(engine).values())


def wait_until_idle(engine, timeout: float = 20.0) -> dict:
    """Poll until the engine holds no per-request state; the last state seen."""
    deadline = time.monotonic() + timeout
    while any((state := idle_state(engine)).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return state
