"""Incremental detokenization on the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from toolkit.tokenizer.detokenizer import IncrementalDetokenizer

TEXTS = [
    "Hello world, this is plain ASCII.",
    "The sea 🌊 at dawn 🌅 — waves, gulls 🐦 and salt.",
    "日本語のテキストと中文混合 with English, ñandú, Grüße.",
    "Family: 👨‍👩‍👧‍👦 flags: 🇫🇷🇯🇵 math: ∑∫√ done.",
]


@pytest.mark.parametrize("text", TEXTS)
def test_token_by_token_deltas_rebuild_the_text_without_broken_characters(runtime, text):
    tokenizer = runtime.tokenizer
    prompt = tokenizer.encode("Say something:", add_special_tokens=False)
    output = tokenizer.encode(text, add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [detokenizer.step([token]) for token in output]
    assert "".join(deltas) == tokenizer.decode(output)
    assert all("\ufffd" not in delta for delta in deltas)
    if any(ord(c) > 0xFFFF for c in text):
        assert "" in deltas, "an emoji spans several tokens, so some step must hold back"


def test_special_tokens_are_skipped(runtime):
    tokenizer = runtime.tokenizer
    detokenizer = IncrementalDetokenizer(tokenizer, [])
    text = "".join(detokenizer.step([t]) for t in tokenizer.encode("Hi there"))
    text += detokenizer.step([tokenizer.eos_token_ids[0]])
    assert text == "Hi there"
