"""The shipped Hermes tools template renders Hermes / Qwen2.5's layout, byte for byte."""

from __future__ import annotations

from toolkit.api.openai.prompts import chat_prompt_ids
from toolkit.api.openai.protocol import ChatCompletionRequest
from toolkit.tokenizer.chat_template import ChatRender, render_chat, shipped_template

TEMPLATE = shipped_template("chatml_hermes_tools")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now, in 'C or <F>",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ROUND_TRIP = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
    {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    {"role": "assistant", "content": "18 degrees at noon."},
]
SYSTEM_WITH_TOOLS = (
    "<|im_start|>system\n"
    "Be brief.\n"
    "\n"
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": '
    '"Weather now, in \'C or <F>", "parameters": {"type": "object", "properties": '
    '{"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}\n'
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
)
EXPECTED = SYSTEM_WITH_TOOLS + (
    "<|im_start|>user\n"
    "Weather and time in Paris?<|im_end|>\n"
    "<|im_start|>assistant\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n'
    "</tool_call>\n"
    "<tool_call>\n"
    '{"name": "get_time", "arguments": {}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "<tool_response>\n"
    "18 degrees\n"
    "</tool_response>\n"
    "<tool_response>\n"
    "noon\n"
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
    "18 degrees at noon.<|im_end|>\n"
)


class _TextTokenizer:
    """Just enough of ``TokenizerClient``: 'encoding' keeps the rendered text."""

    chat_template = "{{ messages[0].content }}"  # ignores tools: the shipped one renders
    rendered = ""

    def render_chat(self, messages, options=None, chat_template=None) -> str:
        self.rendered = render_chat(chat_template or self.chat_template, messages,
                                    options or ChatRender(), {})
        return self.rendered

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


def _render(messages, tools=None, add_generation_prompt=False) -> str:
    return render_chat(TEMPLATE, messages, ChatRender(
        add_generation_prompt=add_generation_prompt, tools=tools), {})


def test_round_trip_renders_the_hermes_layout_exactly():
    messages = [dict(m) for m in ROUND_TRIP]
    messages[2] = {**messages[2], "content": ""}
    assert _render(messages, [WEATHER, TIME]) == EXPECTED


def test_the_api_renders_the_same_bytes():
    """Through the request model: arguments decoded then re-encoded, tools dumped in their
    own key order, non-ASCII and <, >, ' kept as they are."""
    tokenizer = _TextTokenizer()
    request = ChatCompletionRequest(messages=ROUND_TRIP, tools=[WEATHER, TIME],
                                    add_generation_prompt=False)
    ids = chat_prompt_ids(tokenizer, request)
    assert tokenizer.rendered == EXPECTED
    assert "".join(map(chr, ids)) == EXPECTED


def test_the_generation_prompt_opens_an_assistant_line():
    text = _render(ROUND_TRIP[:2], [WEATHER, TIME], add_generation_prompt=True)
    assert text == SYSTEM_WITH_TOOLS + (
        "<|im_start|>user\nWeather and time in Paris?<|im_end|>\n<|im_start|>assistant\n")


def test_call_with_content_and_without_tools_or_system():
    messages = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"function": {"name": "get_time", "arguments": {"zone": "CET"}}}]},
                {"role": "tool", "content": "12:00"}]
    assert _render(messages) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nLet me look.\n<tool_call>\n"
        '{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n")


def test_tojson_keeps_key_order_and_characters():
    source = "{{ value | tojson }}|{{ value | tojson(indent=1) }}"
    value = {"b": "é <'&>", "a": 1}
    text = render_chat(source, [], ChatRender(add_generation_prompt=False,
                                              template_kwargs={"value": value}), {})
    assert text == '{"b": "é <\'&>", "a": 1}|{\n "b": "é <\'&>",\n "a": 1\n}'
