"""A tiny random Llama checkpoint with a word-level tokenizer, written from scratch (no
download): fast bench tests drive a real in-process engine over it."""

from __future__ import annotations

import json
import pathlib

WORDS = ["<unk>", "<s>", "</s>", "the", "a", "model", "runs", "fast", "slow", "token",
         "word", "bench", "sweep", "job", "hydra", "plot"]


def write_tiny_model(directory: pathlib.Path) -> pathlib.Path:
    """A 2-layer Llama (hidden 32, vocabulary len(WORDS)) and its tokenizer in
    ``directory``; unknown words encode as <unk>."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(directory)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)},
                                           unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>"}))
    return directory


def tiny_overrides(directory: pathlib.Path) -> list[str]:
    """Bench overrides that run the tiny model on CPU with a tiny workload."""
    return [f"model.path={directory}", "device=cpu", "model.dtype=float32",
            "model.max_model_len=64", "cache.num_pages=64", "cache.page_size=4",
            "bench.num_requests=4", "bench.prompt_len=6", "bench.output_len=3",
            "bench.num_warmup=0", "bench.progress=false"]
