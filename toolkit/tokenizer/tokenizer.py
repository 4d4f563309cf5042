"""The model's Hugging Face tokenizer behind the small interface the server needs."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from toolkit.tokenizer.chat_template import ChatRender, render_chat
from toolkit.tokenizer.images import ImagePrompts


class Tokenizer:
    """Encode, decode and render chat templates for one model directory."""

    def __init__(self, model_dir: str | Path, eos_token_ids: tuple[int, ...]) -> None:
        self.hf = AutoTokenizer.from_pretrained(str(model_dir))
        self.eos_token_ids = eos_token_ids
        if not self.hf.chat_template:
            self.hf.chat_template = processor_chat_template(model_dir)
        self.images = ImagePrompts.for_model(model_dir)
        """Image preprocessing and prompt expansion of a vision-language model; None for
        a text model."""

    @property
    def chat_template(self) -> str | None:
        """The model's own chat template source, if it has one."""
        return self.hf.chat_template

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True,
               spaces_between_special_tokens: bool = True) -> str:
        """Text of ``token_ids`` (spaces_between_special_tokens only affects slow tokenizers)."""
        return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens,
                              spaces_between_special_tokens=spaces_between_special_tokens)

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Each token decoded on its own, special tokens included (for logprobs)."""
        return self.hf.batch_decode([[t] for t in token_ids], skip_special_tokens=False)

    def convert_ids_to_tokens(self, token_ids: list[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(token_ids)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.hf.convert_tokens_to_string(tokens)

    @property
    def all_special_ids(self) -> set[int]:
        return set(self.hf.all_special_ids)

    def render_chat(self, messages: list[dict], options: ChatRender | None = None,
                    chat_template: str | None = None) -> str:
        """The conversation as text, through ``chat_template`` or the model's template, in
        a sandbox. Raises ValueError when there is no template or it fails."""
        source = chat_template or self.hf.chat_template
        if not source:
            raise ValueError("this model has no chat template; use /v1/completions")
        special = {"bos_token": self.hf.bos_token or "", "eos_token": self.hf.eos_token or ""}
        return render_chat(source, messages, options or ChatRender(), special)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            options: ChatRender | None = None,
                            chat_template: str | None = None) -> list[int]:
        """Render messages (see ``render_chat``) and tokenize the result without adding
        special tokens (the template writes them)."""
        options = options or ChatRender(add_generation_prompt=add_generation_prompt)
        return self.encode(self.render_chat(messages, options, chat_template),
                           add_special_tokens=False)


def processor_chat_template(model_dir: str | Path) -> str | None:
    """The chat template a multimodal checkpoint keeps beside its processor
    (chat_template.jinja or chat_template.json) rather than in the tokenizer's files."""
    jinja = Path(model_dir) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    path = Path(model_dir) / "chat_template.json"
    return json.loads(path.read_text()).get("chat_template") if path.is_file() else None
