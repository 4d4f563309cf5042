"""A tiny random Llama (vocabulary 8, EOS 0) saved as a checkpoint and served by a real
runtime: fast engine tests that need a model but not a good one."""

from __future__ import annotations

import pathlib
import shutil

import torch
import transformers

TINY_VOCAB = 8
TINY_EOS = 0


def build_tiny_runtime(directory: pathlib.Path, tokenizer_dir: pathlib.Path,
                       overrides: list[str] = ()):
    """(transformers model, Runtime) over one random checkpoint in ``directory``; the
    tokenizer files come from ``tokenizer_dir`` (token ids < 8 decode to something)."""
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        eos_token_id=TINY_EOS, bos_token_id=1, tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # peaked, well-separated distributions
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, directory / name)
    runtime = build_runtime(compose_config([
        "device=cpu", f"model.path={directory}", "model.dtype=float32",
        "model.max_model_len=16", "cache.num_pages=256", "cache.page_size=4",
        *overrides]))
    return model, runtime
