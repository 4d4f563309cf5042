"""OpenAI tool definitions, tool choice and the tool calls of responses (pydantic v2)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field


class FunctionDefinition(BaseModel):
    """A function the model may call."""

    name: str = Field(min_length=1, description="The function's name.")
    description: str | None = Field(None, description="What the function does.")
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON schema of the arguments object."
    )
    strict: bool | None = Field(None, description="Arguments always match the schema here.")

    def arguments_schema(self) -> dict[str, Any]:
        """The parameters schema; an empty object schema when none is given."""
        return self.parameters or {"type": "object", "properties": {}}


class ToolDefinition(BaseModel):
    """One entry of ``tools``."""

    type: Literal["function"] = Field("function", description="Only function tools.")
    function: FunctionDefinition


class NamedFunction(BaseModel):
    """The function a named tool choice forces."""

    name: str


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    """A call's function name and its arguments as JSON text."""

    name: str
    arguments: str


class ToolCall(BaseModel):
    """One tool call of an assistant message."""

    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallDelta(BaseModel):
    """What a stream chunk adds to a call's function (unset fields left out)."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """One tool call's part of a stream chunk; id, type and name come with the first."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta
