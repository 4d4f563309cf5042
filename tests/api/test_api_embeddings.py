"""POST /v1/embeddings through the real app and engine (SmolLM2, bfloat16)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct

import pytest
import torch
import torch.nn.functional as F
from api_client import MODEL, assert_error

EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"
TEXTS = ["The capital of France is", "A dragon drinks tea.", "def f(x): return x"]


def body(**fields) -> dict:
    return {"model": MODEL, "input": TEXTS, **fields}


def vectors(reply) -> list[list[float]]:
    assert reply.status == 200, reply.text
    return [d["embedding"] for d in reply.json()["data"]]


def cosine(a: list[float], b: list[float]) -> float:
    return F.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=0).item()


@pytest.fixture(scope="module")
def reference(runtime) -> list[torch.Tensor]:
    """transformers' last-token final hidden state of each text, L2-normalized (float32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(runtime.model_dir),
                                                 dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([runtime.tokenizer.encode(text)])
            out.append(F.normalize(model.model(ids).last_hidden_state[0, -1], dim=-1))
    return out


async def test_vectors_are_transformers_last_token_states_normalized(api, engine, reference):
    reply = await api.post(EMBEDDINGS, body())
    data = reply.json()
    assert data["object"] == "list" and data["model"] == MODEL
    assert [d["index"] for d in data["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in data["data"])
    num_tokens = sum(len(engine.tokenizer.encode(t)) for t in TEXTS)
    assert data["usage"] == {"prompt_tokens": num_tokens, "total_tokens": num_tokens}
    for ours, expected in zip(vectors(reply), reference):
        assert len(ours) == expected.shape[0]
        assert math.isclose(sum(x * x for x in ours), 1.0, rel_tol=1e-4)
        assert cosine(ours, expected.tolist()) > 0.99  # bfloat16 engine vs float32


async def test_base64_decodes_to_the_float_vectors(api):
    floats = vectors(await api.post(EMBEDDINGS, body(input=TEXTS[0])))
    encoded = vectors(await api.post(EMBEDDINGS, body(input=TEXTS[0],
                                                      encoding_format="base64")))
    raw = base64.b64decode(encoded[0])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats[0]


async def test_token_ids_and_strings_give_the_same_vector(api, engine):
    ids = engine.tokenizer.encode(TEXTS[1])
    by_text = vectors(await api.post(EMBEDDINGS, body(input=TEXTS[1])))
    by_ids = vectors(await api.post(EMBEDDINGS, body(input=ids)))
    by_id_lists = vectors(await api.post(EMBEDDINGS, body(input=[ids, ids[:3]])))
    assert by_ids == by_text
    assert cosine(by_id_lists[0], by_text[0]) > 0.999
    assert cosine(by_id_lists[1], by_text[0]) < 0.99


async def test_a_chat_in_flight_is_unaffected(api, chat_body):
    expected = (await api.post(CHAT, chat_body(max_tokens=12))).json()
    chat = asyncio.create_task(api.post(CHAT, chat_body(max_tokens=12)))
    embeds = [asyncio.create_task(api.post(EMBEDDINGS, body(input=[t] * 4))) for t in TEXTS]
    replies = await asyncio.gather(chat, *embeds)
    assert all(r.status == 200 for r in replies)
    got = replies[0].json()
    assert got["choices"][0]["message"] == expected["choices"][0]["message"]


@pytest.mark.parametrize("fields, param", [
    ({"dimensions": 32}, "dimensions"), ({"input": []}, "input"), ({"input": ""}, "input"),
    ({"input": [[]]}, "input"), ({"input": [99999999]}, "input"),
    ({"input": [-1]}, "input"), ({"encoding_format": "int8"}, "encoding_format"),
    ({"model": "nope"}, "model"), ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
])
async def test_bad_input_is_an_openai_error_naming_the_parameter(api, fields, param):
    reply = await api.post(EMBEDDINGS, body(**fields))
    assert_error(reply, 404 if param == "model" else 400, param=param)


async def test_dimensions_of_the_hidden_width_are_accepted(api, runtime):
    width = json.loads((runtime.model_dir / "config.json").read_text())["hidden_size"]
    reply = await api.post(EMBEDDINGS, body(input=TEXTS[0], dimensions=width))
    assert len(vectors(reply)[0]) == width
    assert_error(await api.post(EMBEDDINGS, body(input=TEXTS[0], dimensions=width - 1)), 400,
                 param="dimensions", code="unsupported_parameter")


async def test_too_long_input_is_a_400(api, engine):
    ids = [engine.tokenizer.encode("hello")[-1]] * (engine.max_model_len + 1)
    assert_error(await api.post(EMBEDDINGS, body(input=ids)), 400, param="input",
                 code="context_length_exceeded")
    reply = await api.post(EMBEDDINGS, body(input=ids, truncate_prompt_tokens=8))
    assert reply.json()["usage"]["prompt_tokens"] == 8


async def test_pooling_follows_the_server_config(engine, api):
    from api_client import open_client

    from toolkit.api.app import build_app
    from toolkit.config.schema import EmbeddingConfig, ServerConfig

    last = vectors(await api.post(EMBEDDINGS, body(input=TEXTS[0])))[0]
    config = ServerConfig(embedding=EmbeddingConfig(pooling="mean", normalize=False))
    app, client = await open_client(engine, config)
    try:
        mean = vectors(await client.post(EMBEDDINGS, body(input=TEXTS[0])))[0]
    finally:
        await app.stop()
    assert len(mean) == len(last)
    assert not math.isclose(sum(x * x for x in mean), 1.0, rel_tol=1e-3)
    assert cosine(mean, last) < 0.99
    with pytest.raises(ValueError, match="pooling"):
        build_app(engine, ServerConfig(embedding=EmbeddingConfig(pooling="cls")))
