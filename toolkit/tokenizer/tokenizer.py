"""The model's Hugging Face tokenizer behind the small interface the server needs."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer


class Tokenizer:
    """Encode, decode and render chat templates for one model directory."""

    def __init__(self, model_dir: str | Path, eos_token_ids: tuple[int, ...]) -> None:
        self.hf = AutoTokenizer.from_pretrained(str(model_dir))
        self.eos_token_ids = eos_token_ids

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, token_ids: list[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(token_ids)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.hf.convert_tokens_to_string(tokens)

    @property
    def all_special_ids(self) -> set[int]:
        return set(self.hf.all_special_ids)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Render messages with the model's chat template and tokenize the result.

        Raises ValueError when the model has no template or the template fails.
        """
        if not self.hf.chat_template:
            raise ValueError("this model has no chat template; use /v1/completions")
        try:
            text = self.hf.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # jinja2 errors of every kind
            raise ValueError(f"chat template failed: {exc}") from exc
        return self.encode(text, add_special_tokens=False)
