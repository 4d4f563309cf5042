"""Tiny random Llama checkpoints with a word-level tokenizer, for tensor-parallel tests
(no SmolLM2 needed): token i is the word ``t{i}``."""

from __future__ import annotations

import json
import pathlib

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers


def write_tiny_llama(directory: pathlib.Path, *, vocab_size: int = 64,
                     num_attention_heads: int = 4, num_key_value_heads: int = 2,
                     hidden_size: int = 64, intermediate_size: int = 128,
                     seed: int = 0, num_hidden_layers: int = 2) -> pathlib.Path:
    """A random Llama (2 layers unless asked) (float32, untied LM head scaled for peaked logits) and its
    tokenizer in ``directory``."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=256,
        eos_token_id=0, bos_token_id=1, tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(directory)
    vocab = {f"t{i}": i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="t2"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "t0", "bos_token": "t1",
        "unk_token": "t2"}))
    return directory
