"""A tiny random Llama with a word-level tokenizer, PEFT LoRA adapters made on it with
the ``peft`` package (random, non-zero lora_B), and runtimes serving them: fast CPU tests
of LoRA serving (tests/lora, tests/api/test_api_lora.py)."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import transformers

peft = pytest.importorskip("peft")

VOCAB_SIZE = 64
HIDDEN_SIZE = 64

ADAPTERS = {
    "all7": dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                     "gate_proj", "up_proj", "down_proj"]),
    "qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "mlp_rslora": dict(r=16, lora_alpha=32, use_rslora=True,
                       target_modules=["gate_proj", "down_proj"]),
    "patterned": dict(r=2, lora_alpha=4, target_modules=["k_proj", "o_proj", "up_proj"],
                      rank_pattern={"o_proj": 6}, alpha_pattern={"up_proj": 9}),
}
"""Adapters over several ranks and target sets: all modules, attention only (two of four),
MLP only with rsLoRA scaling, per-module rank and alpha patterns."""


def tiny_llama_config(hidden_size: int = HIDDEN_SIZE) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, eos_token_id=0, bos_token_id=1,
        tie_word_embeddings=False)


def save_word_tokenizer(directory: pathlib.Path) -> None:
    """A whitespace word-level tokenizer: "w<i>" is token i (w0 is EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB_SIZE)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w2"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="w0",
                                                bos_token="w1", unk_token="w2")
    fast.save_pretrained(directory)


def save_tiny_llama(directory: pathlib.Path, hidden_size: int = HIDDEN_SIZE,
                    seed: int = 0) -> pathlib.Path:
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(tiny_llama_config(hidden_size)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(directory)
    save_word_tokenizer(directory)
    return directory


def make_adapter(base_dir: pathlib.Path, directory: pathlib.Path, seed: int, **lora_kwargs):
    """A PEFT LoRA adapter on the model in ``base_dir`` with random A and B (B scaled so
    the delta is visible), saved to ``directory``; returns the PEFT model (unmerged)."""
    torch.manual_seed(seed)
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = peft.LoraConfig(init_lora_weights=False, lora_dropout=0.0, **lora_kwargs)
    model = peft.get_peft_model(base, config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(4.0)
    model.save_pretrained(directory)
    return model


def merged_logits(base_dir: pathlib.Path, adapter_dir: pathlib.Path | None,
                  token_ids: list[int]) -> torch.Tensor:
    """[T, V] float32 logits of PEFT's merged model (the base model for None)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = peft.PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    with torch.no_grad():
        return model.eval()(torch.tensor([token_ids])).logits[0].float()


def lora_overrides(base_dir: pathlib.Path, modules: dict[str, pathlib.Path],
                   *extra: str) -> list[str]:
    return ["device=cpu", f"model.path={base_dir}", "model.dtype=float32",
            "model.max_model_len=128", "cache.num_pages=256", "cache.page_size=4",
            "lora.enable=true", "lora.modules=" + json.dumps(
                [f"{name}={path}" for name, path in modules.items()]), *extra]


def build_lora_runtime(base_dir: pathlib.Path, modules: dict[str, pathlib.Path], *extra: str):
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    return build_runtime(compose_config(lora_overrides(base_dir, modules, *extra)))
