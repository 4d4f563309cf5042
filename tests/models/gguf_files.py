"""GGUF files for tests, written with the ``gguf`` package's own writer (GGUFWriter) from a
tiny random transformers Llama, the way llama.cpp's converter lays them out: q/k rows
permuted for interleaved RoPE, a byte-level BPE tokenizer and a ChatML template in the
metadata, each tensor in the quant type asked for.

gguf 0.19 quantizes F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 in Python but not the
K-quants (NotImplementedError), so K-quant tensors are random blocks with sane fp16
scales: any such bytes are valid blocks, and gguf's own dequantizer is the reference.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

Q = GGMLQuantizationType
HIDDEN = 256
"""Row length of the projections: K-quant blocks hold 256 weights."""
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
EOS_ID = 2
K_QUANT_SCALE_OFFSETS = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
"""Byte offsets of the fp16 scale fields (d, dmin) in one K-quant block."""


def _byte_level_tokens() -> tuple[list[str], list[str]]:
    """(tokens, merges): the special tokens, the 256 byte symbols of GPT-2's byte-level
    BPE, and two merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(dict.fromkeys(bytes_to_unicode().values()))
    merges = ["Ġ t", "h e"]
    return [*SPECIAL_TOKENS, *symbols, "Ġt", "he"], merges


def tiny_llama(seed: int = 0, tie_word_embeddings: bool = False) -> transformers.LlamaForCausalLM:
    """A random Llama with GGUF-friendly widths (hidden 256, 4 heads of 64, 2 KV heads)."""
    torch.manual_seed(seed)
    tokens, _ = _byte_level_tokens()
    config = transformers.LlamaConfig(
        vocab_size=len(tokens), hidden_size=HIDDEN, intermediate_size=512,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        bos_token_id=1, eos_token_id=EOS_ID, tie_word_embeddings=tie_word_embeddings)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaked distributions: greedy ties are unlikely
    return model


def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's converter: per head, the rotary halves interleaved (rows move whole)."""
    half = weight.shape[0] // num_heads // 2
    return weight.reshape(num_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str:
    """transformers Llama parameter name -> llama.cpp tensor name."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf_name in top:
        return top[hf_name]
    parts = hf_name.split(".")  # model.layers.N.<module path>.weight
    return f"blk.{parts[2]}.{_GGUF_NAMES['.'.join(parts[3:-1])]}.{parts[-1]}"


def random_k_quant_blocks(rows: int, cols: int, qtype: GGMLQuantizationType,
                          rng: np.random.Generator) -> np.ndarray:
    """uint8 [rows, cols / 256 * block bytes]: random codes, fp16 scales in 1e-3..1e-2."""
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows, cols // block_size, block_bytes), dtype=np.uint8)
    for offset in K_QUANT_SCALE_OFFSETS[qtype]:
        scales = rng.uniform(1e-3, 1e-2, size=(rows, cols // block_size)).astype(np.float16)
        blocks[..., offset:offset + 2] = scales.view(np.uint8).reshape(*scales.shape, 2)
    return blocks.reshape(rows, -1)


def encode(weight: np.ndarray, qtype: GGMLQuantizationType,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(stored data, its dequantization by gguf) of a float32 weight in ``qtype``; K-quants
    are random blocks of the weight's shape (see the module doc)."""
    if qtype == Q.F32:
        return weight, weight
    if qtype in K_QUANT_SCALE_OFFSETS:
        data = random_k_quant_blocks(*weight.shape, qtype, rng)
        return data, dequantize(data, qtype)
    try:
        data = quantize(weight, qtype)
    except NotImplementedError:  # a type gguf cannot handle: random bytes, no values
        block_size, block_bytes = GGML_QUANT_SIZES[qtype]
        shape = (weight.shape[0], weight.shape[1] // block_size * block_bytes)
        return rng.integers(0, 256, size=shape, dtype=np.uint8), None
    return data, dequantize(data, qtype)


def write_gguf(model: transformers.PreTrainedModel, path: pathlib.Path,
               type_of: dict[str, GGMLQuantizationType] | GGMLQuantizationType,
               seed: int = 0, arch: str = "llama") -> dict[str, torch.Tensor]:
    """Write ``model`` (a Llama, or a Qwen2 with ``arch="qwen2"``) as a GGUF at ``path``;
    returns HF name -> the float32 weights the file holds, in transformers' row order
    (gguf's dequantization of each tensor).

    ``type_of``: one quant type for every 2-D weight, or HF name -> type (default F32);
    norms and biases stay F32, as llama.cpp keeps them. Only ``llama`` files get their q/k
    rows permuted (llama.cpp's converter leaves qwen2's alone).
    """
    config = model.config
    rng = np.random.default_rng(seed)
    tokens, merges = _byte_level_tokens()
    writer = GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIAL_TOKENS) + [1] * (len(tokens) - len(SPECIAL_TOKENS)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    writer.add_float32("general.sampling.temp", 0.6)
    held = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        weight = tensor.float().numpy()
        qtype = Q.F32 if weight.ndim == 1 else (
            type_of if isinstance(type_of, GGMLQuantizationType) else type_of.get(name, Q.F32))
        data, values = encode(weight, qtype, rng)
        if values is not None:
            held[name] = torch.from_numpy(np.array(values, dtype=np.float32))
        num_heads = {".q_proj.": config.num_attention_heads,
                     ".k_proj.": config.num_key_value_heads} if arch == "llama" else {}
        for part, heads in num_heads.items():
            if part in name:
                data = llama_cpp_permute(data, heads)
        writer.add_tensor(gguf_name(name), data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held
