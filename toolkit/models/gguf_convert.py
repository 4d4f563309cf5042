"""GGUF (llama architecture) -> a safetensors model directory transformers can also read.

Weights are dequantized with the ``gguf`` package and written as float32: that is what
transformers' own GGUF loader produces, so our model and the reference see identical
weights (bf16 would cost parity; the serving dtype is chosen at load time anyway).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile

import torch
from safetensors.torch import save_file
from tqdm import tqdm

_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_TOP_LEVEL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


class GGUFConversionError(ValueError):
    """A GGUF file this converter cannot turn into a Llama checkpoint."""


def hf_tensor_name(gguf_name: str) -> str:
    """llama.cpp tensor name -> transformers Llama parameter name."""
    if gguf_name in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[gguf_name]
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise GGUFConversionError(f"unknown GGUF tensor {gguf_name!r}")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"


def unpermute_rotary_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order: per head it stores the even rotary rows first,
    then the odd ones (interleaved RoPE); HF's rotate_half wants the two halves apart.

    weight: [num_heads * head_dim, ...] -> same shape.
    """
    rows = weight.shape[0]
    half = rows // num_heads // 2
    per_head = weight.reshape(num_heads, half, 2, *weight.shape[1:])
    return per_head.transpose(1, 2).reshape(weight.shape)


def _metadata(reader) -> dict:
    """Scalar (and string) GGUF metadata; big arrays such as the vocabulary are skipped."""
    values = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and len(field.data) > 1:
            continue
        values[key] = field.contents()
    return values


def build_hf_config(meta: dict, has_output: bool) -> dict:
    """config.json for a Llama checkpoint from llama-architecture GGUF metadata."""
    arch = meta["general.architecture"]
    if arch != "llama":
        raise GGUFConversionError(f"GGUF architecture {arch!r} is not supported (only 'llama')")
    num_heads = meta["llama.attention.head_count"]
    hidden = meta["llama.embedding_length"]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": meta["llama.feed_forward_length"],
        "num_hidden_layers": meta["llama.block_count"],
        "num_attention_heads": num_heads,
        "num_key_value_heads": meta.get("llama.attention.head_count_kv", num_heads),
        "head_dim": meta.get("llama.attention.key_length", hidden // num_heads),
        "max_position_embeddings": meta["llama.context_length"],
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "vocab_size": meta.get("llama.vocab_size", len(meta.get("tokenizer.ggml.tokens", []))),
        "tie_word_embeddings": not has_output,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear",
                                  "factor": float(meta["llama.rope.scaling.factor"])}
    elif scaling != "none":
        raise GGUFConversionError(f"GGUF rope scaling {scaling!r} is not supported")
    return config


def _dequantized_tensors(reader, config: dict):
    """Yield (hf name, float32 tensor) for every GGUF tensor, q/k rows un-permuted."""
    from gguf.quants import dequantize

    for tensor in tqdm(reader.tensors, desc="dequantizing GGUF", unit="tensor"):
        if tensor.name == "rope_freqs.weight":
            raise GGUFConversionError("GGUF with baked rope_freqs (llama3 rope) is not supported")
        name = hf_tensor_name(tensor.name)
        weight = torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy())
        if ".q_proj." in name:
            weight = unpermute_rotary_rows(weight, config["num_attention_heads"])
        elif ".k_proj." in name:
            weight = unpermute_rotary_rows(weight, config["num_key_value_heads"])
        yield name, weight.float().contiguous()


def _save_tokenizer(gguf_path: pathlib.Path, out_dir: pathlib.Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.save_pretrained(str(out_dir))
    if tokenizer.chat_template and not _has_saved_chat_template(out_dir):
        (out_dir / "chat_template.jinja").write_text(tokenizer.chat_template)


def _has_saved_chat_template(model_dir: pathlib.Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file():
        return True
    tokenizer_config = model_dir / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        return False
    return "chat_template" in json.loads(tokenizer_config.read_text())


def _write_model_dir(gguf_path: pathlib.Path, out_dir: pathlib.Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    meta = _metadata(reader)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = build_hf_config(meta, has_output)
    save_file(dict(_dequantized_tensors(reader, config)), str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2))
    _save_tokenizer(gguf_path, out_dir)


def convert_gguf(gguf_path: pathlib.Path | str, out_dir: pathlib.Path | str) -> pathlib.Path:
    """Convert once: build in a temporary sibling directory, then rename it into place.

    Returns ``out_dir``; an existing ``out_dir`` is taken as a finished conversion.
    """
    gguf_path, out_dir = pathlib.Path(gguf_path), pathlib.Path(out_dir)
    if out_dir.is_dir():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_model_dir(gguf_path, work_dir)
        work_dir.chmod(0o755)
        os.rename(work_dir, out_dir)
    except OSError:
        if not out_dir.is_dir():  # a concurrent conversion that finished first is fine
            raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return out_dir
