"""Tiny random Llama checkpoints that share SmolLM2's tokenizer (so the real engine,
detokenizer included, can serve them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS = 32, 64, 4, 2
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def smollm2_dir() -> Path:
    """The converted SmolLM2 directory (converted once into the cache)."""
    from toolkit.config.schema import ModelConfig
    from toolkit.models.source import resolve_model_dir

    return resolve_model_dir(ModelConfig().source)


def write_tiny_llama(directory: Path, vocab_size: int, seed: int, num_layers: int = 2,
                     logit_scale: float = 1.0, eos_token_id: int = 2, noise: float = 0.0,
                     noise_seed: int = 1) -> Path:
    """A random ``num_layers``-layer Llama over ``vocab_size`` tokens; ``logit_scale``
    sharpens its next-token distributions (it scales the output head). ``noise`` > 0
    perturbs every weight matrix (a draft close to, but not equal to, the seed's model)."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, std=0.2):
        return torch.randn(*shape, generator=generator) * std

    head_dim = HIDDEN // HEADS
    weights = {"model.embed_tokens.weight": randn(vocab_size, HIDDEN, std=1.0),
               "lm_head.weight": randn(vocab_size, HIDDEN, std=logit_scale),
               "model.norm.weight": torch.ones(HIDDEN)}
    for i in range(num_layers):
        layer = f"model.layers.{i}."
        weights.update({
            layer + "input_layernorm.weight": torch.ones(HIDDEN),
            layer + "post_attention_layernorm.weight": torch.ones(HIDDEN),
            layer + "self_attn.q_proj.weight": randn(HEADS * head_dim, HIDDEN),
            layer + "self_attn.k_proj.weight": randn(KV_HEADS * head_dim, HIDDEN),
            layer + "self_attn.v_proj.weight": randn(KV_HEADS * head_dim, HIDDEN),
            layer + "self_attn.o_proj.weight": randn(HIDDEN, HEADS * head_dim),
            layer + "mlp.gate_proj.weight": randn(INTERMEDIATE, HIDDEN),
            layer + "mlp.up_proj.weight": randn(INTERMEDIATE, HIDDEN),
            layer + "mlp.down_proj.weight": randn(HIDDEN, INTERMEDIATE),
        })
    if noise:
        perturb = torch.Generator().manual_seed(noise_seed)
        weights = {name: w + noise * torch.randn(w.shape, generator=perturb) if w.dim() == 2
                   else w for name, w in weights.items()}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
              "num_hidden_layers": num_layers, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "vocab_size": vocab_size,
              "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": eos_token_id}
    (directory / "config.json").write_text(json.dumps(config))
    save_file(weights, str(directory / "model.safetensors"))
    source = smollm2_dir()
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, directory / name)
    return directory


def tiny_runtime(model_dir: Path, *overrides: str, num_pages: int = 256):
    """A Runtime serving ``model_dir`` in float32 on CPU."""
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    base = ["device=cpu", f"model.path={model_dir}", "model.dtype=float32",
            "model.max_model_len=256", f"cache.num_pages={num_pages}", "cache.page_size=16",
            "scheduler.max_num_seqs=256", "scheduler.max_num_batched_tokens=4096",
            "device.num_threads=1", "scheduler.max_waiting=null"]
    return build_runtime(compose_config([*base, *overrides]))
