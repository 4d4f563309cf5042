"""instructor, unchanged, against the real server: a pydantic ``response_model`` through
Mode.TOOLS (a forced call of the model's schema) and Mode.JSON_SCHEMA (response_format),
whole and streamed as partial objects."""

from __future__ import annotations

import json

import pytest

instructor = pytest.importorskip("instructor")

from client_helpers import BUDGET, MODEL, Person, check_person  # noqa: E402

pytestmark = pytest.mark.clients

MODES = ["TOOLS", "JSON_SCHEMA"]
MESSAGES = [{"role": "user", "content": "Invent a person."}]


def request(**fields):
    # max_retries=1: one attempt; the grammar makes a retry (a re-ask) unnecessary
    return {"model": MODEL, "messages": MESSAGES, "response_model": Person,
            "temperature": 0, "max_tokens": BUDGET, "max_retries": 1, **fields}


@pytest.mark.parametrize("mode", MODES)
def test_response_model(openai_client, mode):
    client = instructor.from_openai(openai_client, mode=getattr(instructor.Mode, mode))
    person, completion = client.chat.completions.create_with_completion(**request())
    check_person(person)
    message = completion.choices[0].message
    if mode == "TOOLS":
        [call] = message.tool_calls
        assert call.function.name == "Person"
        assert json.loads(call.function.arguments) == person.model_dump()
    else:
        assert not message.tool_calls
        assert json.loads(message.content) == person.model_dump()
    # instructor returns its own subclass of Person: compare the fields
    assert client.chat.completions.create(**request()).model_dump() == person.model_dump()


@pytest.mark.parametrize("mode", MODES)
def test_partial_stream_grows_into_a_whole_object(openai_client, mode):
    client = instructor.from_openai(openai_client, mode=getattr(instructor.Mode, mode))
    partials = list(client.chat.completions.create_partial(**request()))
    assert len(partials) > 1
    person = check_person(Person.model_validate(partials[-1].model_dump()))
    names = [p.name for p in partials if p.name is not None]
    assert names and all(person.name.startswith(name) for name in names)
    if mode == "JSON_SCHEMA":
        # the same prompt and grammar as a whole request (under TOOLS, instructor names
        # the streamed tool PartialPerson, a different prompt)
        whole = client.chat.completions.create(**request())
        assert person.model_dump() == whole.model_dump()
