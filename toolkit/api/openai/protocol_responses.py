"""The request body of OpenAI's Responses API (``POST /v1/responses``), pydantic v2.

Input items are told apart by their ``type`` (a message when it is missing). Union tags are
class names, which ``loc_to_param`` leaves out, so a bad item is a 400 naming
``input[2].content`` rather than the union branch.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from toolkit.api.openai.protocol_sampling import SEED_MAX, SEED_MIN, GuidedRequest


class InputContentPart(BaseModel):
    """One part of an input message's content; only text parts are supported."""

    type: str = Field(description="input_text (or output_text in assistant turns); "
                      "input_image, input_file ... are not supported.")
    text: str | None = Field(None, description="The text of a text part.")


class InputMessage(BaseModel):
    """A message of the conversation: ``{"role", "content"}``, ``type`` optional."""

    type: Literal["message"] = Field("message", description="Always message.")
    role: Literal["user", "system", "developer", "assistant"] = Field(
        description="Who wrote the message."
    )
    content: str | list[InputContentPart] = Field(
        description="The text, or a list of text parts joined with newlines."
    )


class FunctionCallInput(BaseModel):
    """A function call the model made in an earlier turn (an output item sent back)."""

    type: Literal["function_call"] = Field(description="Always function_call.")
    call_id: str = Field(min_length=1, description="The call's id, answered by a "
                         "function_call_output item.")
    name: str = Field(min_length=1, description="The called function.")
    arguments: str = Field(description="The call's arguments as JSON text.")


class FunctionCallOutputInput(BaseModel):
    """What the client's function returned for a call."""

    type: Literal["function_call_output"] = Field(description="Always function_call_output.")
    call_id: str = Field(min_length=1, description="The call this output answers.")
    output: str | list[InputContentPart] = Field(
        description="The function's result: text, or a list of text parts."
    )


class ReasoningInput(BaseModel):
    """A reasoning item of an earlier turn; accepted and left out of the prompt."""

    type: Literal["reasoning"] = Field(description="Always reasoning.")


_ITEM_TAGS = {
    "message": "InputMessage",
    "function_call": "FunctionCallInput",
    "function_call_output": "FunctionCallOutputInput",
    "reasoning": "ReasoningInput",
}
"""Item ``type`` -> union tag."""


def _item_tag(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(
        value, "type", None)
    return _ITEM_TAGS.get(kind) if isinstance(kind, str) else None


InputItem = Annotated[
    Annotated[InputMessage, Tag("InputMessage")]
    | Annotated[FunctionCallInput, Tag("FunctionCallInput")]
    | Annotated[FunctionCallOutputInput, Tag("FunctionCallOutputInput")]
    | Annotated[ReasoningInput, Tag("ReasoningInput")],
    Discriminator(
        _item_tag,
        custom_error_type="invalid_value",
        custom_error_message="an input item's type must be one of "
        + ", ".join(_ITEM_TAGS),
    ),
]
"""One input item: a message, a function call, a function call's output or reasoning."""

Input = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[InputItem], Tag("list")],
    Discriminator(lambda value: "str" if isinstance(value, str) else "list"),
]
"""A string, or a list of items (the errors of a bad list name the item, not the string
branch)."""


class ResponsesTool(BaseModel):
    """One entry of ``tools``: Responses' flat function shape ``{type, name, parameters}``.
    Other tool types (web_search, file_search ...) are a 400."""

    type: str = Field(description="Only function.")
    name: str | None = Field(None, min_length=1, description="The function's name.")
    description: str | None = Field(None, description="What the function does.")
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON schema of the arguments object."
    )
    strict: bool | None = Field(None, description="Arguments always match the schema here.")


class FunctionToolChoice(BaseModel):
    """``{"type": "function", "name": ...}``: force one call of this function."""

    type: Literal["function"] = Field(description="Always function.")
    name: str = Field(description="The function to call.")


ResponsesToolChoice = Literal["none", "auto", "required"] | FunctionToolChoice
"""none, auto, required, or one named function."""


class TextFormat(BaseModel):
    """``text.format``: plain text, any JSON object, or JSON matching a schema."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True,
                              validate_by_alias=True)

    type: Literal["text", "json_object", "json_schema"] = Field(
        "text", description="text, json_object or json_schema."
    )
    name: str | None = Field(None, description="json_schema: the schema's name.")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="json_schema: the JSON schema the output matches."
    )
    description: str | None = Field(None, description="json_schema: what the output is for.")
    strict: bool | None = Field(None, description="json_schema: outputs always match here.")


class TextConfig(BaseModel):
    """``text``: the output's format."""

    format: TextFormat = Field(default_factory=TextFormat, description="The output format.")


class ReasoningOptions(BaseModel):
    """``reasoning``: reasoning items appear when the server's reasoning parser is on
    (server.chat.reasoning); effort and summaries are not supported."""

    effort: str | None = Field(None, description="Not supported.")
    summary: str | None = Field(None, description="Not supported.")


class ResponsesRequest(GuidedRequest):
    """Body of ``POST /v1/responses``; the guided_* extras of chat completions apply."""

    model_config = ConfigDict(allow_inf_nan=False)

    model: str | None = Field(None, description="A served model name; defaults to the first.")
    input: Input = Field(
        description="A user message's text, or a list of input items."
    )
    instructions: str | None = Field(
        None, description="A system message put first; not carried over by "
        "previous_response_id.",
    )
    previous_response_id: str | None = Field(
        None, description="Continue the conversation of this stored response."
    )
    store: bool = Field(True, description="Keep the response for GET and "
                        "previous_response_id (in memory, bounded in number and age).")
    stream: bool = Field(False, description="Stream typed server-sent events.")
    max_output_tokens: int | None = Field(
        None, description="Most tokens to generate; defaults to the rest of the context."
    )
    temperature: float | None = Field(None, description="0 is greedy. Default 1.")
    top_p: float | None = Field(None, description="Nucleus probability mass (0, 1].")
    tools: list[ResponsesTool] | None = Field(None, description="Functions the model may call.")
    tool_choice: ResponsesToolChoice | None = Field(
        None, description="none, auto (default), required, or {'type': 'function', "
        "'name': ...}.",
    )
    parallel_tool_calls: bool = Field(True, description="Allow more than one tool call.")
    text: TextConfig | None = Field(None, description="{'format': {'type': 'text' | "
                                    "'json_object' | 'json_schema', ...}}.")
    reasoning: ReasoningOptions | None = Field(None, description="Reasoning options.")
    metadata: dict[str, str] | None = Field(None, description="Returned with the response.")
    user: str | None = Field(None, description="End-user id; accepted and ignored.")
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX,
                             description="Reproducible sampling (extra).")
    top_k: int | None = Field(None, description="Keep the k most likely tokens (extra).")
    min_p: float | None = Field(None, description="Drop tokens below min_p * p_max (extra).")
    presence_penalty: float | None = Field(None, description="[-2, 2] (extra).")
    frequency_penalty: float | None = Field(None, description="[-2, 2] (extra).")
    repetition_penalty: float | None = Field(None, description="(0, 2] (extra).")
    stop: str | list[str] | None = Field(None, description="Strings that end generation "
                                         "(extra).")
    priority: int = Field(0, description="Lower runs earlier (extra; priority policy).")
    background: bool | None = Field(None, description="Not supported.")
    include: list[str] | None = Field(None, description="Not supported.")
    conversation: str | dict[str, Any] | None = Field(None, description="Not supported.")
    prompt: dict[str, Any] | None = Field(None, description="Not supported.")
    max_tool_calls: int | None = Field(None, description="Not supported.")
    top_logprobs: int | None = Field(None, description="Not supported.")
    truncation: Literal["auto", "disabled"] | None = Field(
        None, description="Only disabled: a prompt over the context is a 400."
    )

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        "background", "include", "conversation", "prompt", "max_tool_calls", "top_logprobs",
        "response_format",
    )
    """Fields rejected when truthy (response_format: use text.format)."""

    PASSED_THROUGH: ClassVar[tuple[str, ...]] = (
        "temperature", "top_p", "seed", "top_k", "min_p", "presence_penalty",
        "frequency_penalty", "repetition_penalty", "stop", "priority", "user",
        "guided_json", "guided_regex", "guided_choice", "guided_grammar",
        "guided_whitespace_pattern", "guided_decoding_backend",
    )
    """Fields the chat completions request takes under the same name."""

    def unsupported_params(self) -> list[str]:
        """Names of the fields set to values this server cannot honour."""
        names = [name for name in self.UNSUPPORTED if getattr(self, name)]
        if self.truncation == "auto":
            names.append("truncation")
        if self.reasoning is not None:
            names += [f"reasoning.{name}" for name in ("effort", "summary")
                      if getattr(self.reasoning, name)]
        return names

    def items(self) -> list[InputItem]:
        """``input`` as a list of items (a string is one user message)."""
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return list(self.input)
