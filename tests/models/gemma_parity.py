"""Tiny random Gemma checkpoints and our Gemma models over a paged KV cache whose
attention backend knows each layer's window, soft cap and scale; the rest of the parity
harness is tests/models/arch_parity.py."""

from __future__ import annotations

import json
import pathlib

import torch
import transformers
from arch_parity import PAGE_SIZE, VOCAB_SIZE, write_word_tokenizer

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info

PROMPT_LEN = 21
"""Longer than every tiny config's sliding window (6)."""
SHAPE = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=112,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=96, sliding_window=6, query_pre_attn_scalar=24,
             bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager")
"""A tiny Gemma: GQA 4/2, head_dim 16 scaled by 24 ** -0.5 (query_pre_attn_scalar, not
head_dim), a 6-position window; transformers' eager attention (the one that soft-caps)."""


def save_gemma(config: transformers.PretrainedConfig, directory: pathlib.Path):
    """Seeded random weights with perturbed norms (Gemma's init leaves ``1 + w`` at 1), the
    final norm's ``1 + w`` ten times larger (logits of a few units, where the final soft
    cap bites, and clear greedy margins) and the q/k projections scaled up (attention
    scores of a few units, where the attention soft cap bites); saved with a word
    tokenizer -> transformers' model."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.3)
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(8.0)
        final_norm = model.model.norm.weight
        final_norm.copy_((1 + final_norm) * 10 - 1)
    model.save_pretrained(directory)
    write_word_tokenizer(directory, config.vocab_size)
    return model


def rewrite_config(directory: pathlib.Path, **changes) -> None:
    """Edit config.json in place: keys set to None are removed, others set."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def paged_gemma(model_dir: pathlib.Path, kernels: KernelRoute = TORCH,
                layers=None, dtype: torch.dtype = torch.float32):
    """(our model from the real loader, a torch_ref backend over a fresh pool built with
    the model's per-layer attention, or ``layers`` when given)."""
    model = load_model(model_dir, dtype, "cpu", kernels=kernels)
    info = read_model_info(model_dir)
    pool = KVCachePool(info.num_layers, num_pages=64, page_size=PAGE_SIZE,
                       num_kv_heads=info.num_kv_heads, head_dim=info.head_dim, dtype=dtype)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim,
                           kernels=kernels, layers=layers or model.attention_layers)
    return model, attn
