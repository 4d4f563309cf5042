"""What the client tests share: the served model's name, the structures they force (each
bounded, so that a greedy 135M model always completes them within the token budget) and
the checks a user of each client would make on what comes back."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

MODEL = "smollm2"
"""The served model name (``model.name`` of the default config)."""

EMBEDDING_DIMS = 576
"""SmolLM2-135M's hidden size: the width of its embeddings."""

STORY = "Write a long story about a dragon."
"""A prompt the model answers at length, so that a small max_tokens cuts it."""

UNITS = ("celsius", "fahrenheit")

BUDGET = 64
"""max_tokens of a forced structure: the bounded strings below fit in it many times."""


class Person(BaseModel):
    """A person the model invents: a short name and an age."""

    name: str = Field(min_length=1, max_length=12, description="The person's first name.")
    age: int = Field(ge=0, le=120, description="Age in years.")


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(min_length=1, max_length=12, description="The city's name.")
    unit: Literal["celsius", "fahrenheit"] = Field(description="The temperature unit.")


class WeatherAnswer(BaseModel):
    """The final answer after the weather tool has been called."""

    temperature: int = Field(ge=-60, le=60, description="The temperature now.")
    summary: str = Field(min_length=1, max_length=24, description="One short sentence.")


WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 12,
                 "description": "The city's name."},
        "unit": {"type": "string", "enum": list(UNITS)},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
"""GetWeather's arguments as a hand-written JSON schema (what a dict tool carries)."""

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Get the current weather in a city.",
                 "parameters": WEATHER_PARAMETERS, "strict": True},
}
"""The Chat Completions tool definition (strict: the SDK's parse helpers accept only
strict tools)."""

WEATHER_RESULT = "21 degrees celsius, sunny"
"""What the client's get_weather returns."""


def check_person(person: Any) -> Person:
    """``person`` is a Person whose fields have their types and bounds."""
    assert isinstance(person, Person), type(person)
    assert isinstance(person.name, str) and 1 <= len(person.name) <= 12, person
    assert type(person.age) is int and 0 <= person.age <= 120, person
    return person


def check_weather_arguments(arguments: str | dict) -> dict:
    """A get_weather call's arguments (JSON text or decoded): exactly city and unit, a
    short string and one of the units."""
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    assert set(arguments) == {"city", "unit"}, arguments
    assert isinstance(arguments["city"], str) and 1 <= len(arguments["city"]) <= 12
    assert arguments["unit"] in UNITS, arguments
    return arguments


def check_answer(answer: Any) -> WeatherAnswer:
    """``answer`` is a WeatherAnswer within its bounds."""
    assert isinstance(answer, WeatherAnswer), type(answer)
    assert type(answer.temperature) is int and -60 <= answer.temperature <= 60, answer
    assert isinstance(answer.summary, str) and 1 <= len(answer.summary) <= 24, answer
    return answer
