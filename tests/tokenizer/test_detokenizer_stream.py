"""The incremental detokenizer's two routes agree: tokenizers' DecodeStream (fast
tokenizers) and the windowed re-decode in Python (any other), token by token and in
multi-token steps, with special tokens skipped or kept, on two tokenizers built from
scratch: a byte-level BPE (GPT-2, SmolLM2, Llama 3) and a sentencepiece-style BPE with
byte fallback (Llama 2, Mistral)."""

from __future__ import annotations

import random

import pytest
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from toolkit.tokenizer.detokenizer import IncrementalDetokenizer

TEXTS = [
    "Hello world, this is plain ASCII.",
    "The sea 🌊 at dawn 🌅 — waves, gulls 🐦 and salt.",
    "日本語のテキストと中文混合 with English, ñandú, Grüße.",
    "Family: 👨‍👩‍👧‍👦 flags: 🇫🇷🇯🇵 math: ∑∫√ done.",
    "  leading spaces\n\nnew lines\ttabs  ",
]
CORPUS = ["hello world this is plain ascii text, say something: the sea at dawn. "] * 40
SPECIALS = ["<unk>", "<s>", "</s>"]


def byte_level_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tokenizer


def byte_fallback_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                                 normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                           decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS + [f"<0x{i:02X}>" for i in range(256)],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz▁,.:")))
    return tokenizer


class FastTokenizer:
    """What the detokenizer sees of toolkit's Tokenizer: ``hf`` (a fast tokenizer) and
    ``decode``."""

    def __init__(self, raw: Tokenizer) -> None:
        self.hf = PreTrainedTokenizerFast(tokenizer_object=raw)

    def decode(self, token_ids, skip_special_tokens=True, spaces_between_special_tokens=True):
        return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens)


class DecodeOnlyTokenizer:
    """A tokenizer without a Rust backend: the Python route."""

    def __init__(self, fast: FastTokenizer) -> None:
        self.decode = fast.decode


@pytest.fixture(scope="module", params=["byte_level", "byte_fallback"])
def tokenizer(request) -> FastTokenizer:
    raw = byte_level_bpe() if request.param == "byte_level" else byte_fallback_bpe()
    return FastTokenizer(raw)


def steps(tokenizer, prompt, chunks, skip_special_tokens):
    detokenizer = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens)
    return [detokenizer.step(chunk) for chunk in chunks]


def test_the_fast_tokenizer_takes_decode_stream(tokenizer):
    assert IncrementalDetokenizer(tokenizer, [1])._backend is not None
    assert IncrementalDetokenizer(DecodeOnlyTokenizer(tokenizer), [1])._backend is None


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_both_routes_give_the_same_deltas(tokenizer, text, skip_special_tokens):
    prompt = tokenizer.hf.encode("Say something:", add_special_tokens=False)
    middle = len(text) // 2  # a special token between two whole halves, and one at the end
    eos = tokenizer.hf.convert_tokens_to_ids("</s>")
    output = [*tokenizer.hf.encode(text[:middle], add_special_tokens=False), eos,
              *tokenizer.hf.encode(text[middle:], add_special_tokens=False), eos]
    rng = random.Random(len(text))
    chunked, i = [], 0
    while i < len(output):
        size = rng.randint(1, 4)
        chunked.append(output[i:i + size])
        i += size
    for chunks in ([[t] for t in output], chunked):
        fast = steps(tokenizer, prompt, chunks, skip_special_tokens)
        python = steps(DecodeOnlyTokenizer(tokenizer), prompt, chunks, skip_special_tokens)
        assert fast == python
        context = tokenizer.decode(prompt[-5:], skip_special_tokens)  # continues the prompt
        whole = tokenizer.decode(prompt[-5:] + output, skip_special_tokens)
        assert context + "".join(fast) == whole
        assert all("\ufffd" not in delta for delta in fast)
