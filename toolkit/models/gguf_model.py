"""A GGUF file (llama.cpp's format) as a model: its config, weights and tokenizer.

Supported GGUF architectures (``general.architecture``): ``llama`` (Llama 2/3, Mistral and
SmolLM2 files, which llama.cpp writes as ``llama``) and ``qwen2``.

- Config: a transformers config.json built from the ``<arch>.*`` metadata, so ModelInfo,
  the preflight and the model classes read a GGUF exactly as they read a checkpoint.
- Weights: read with ``gguf.GGUFReader`` one tensor at a time and dequantized with
  ``gguf.quants.dequantize`` (any type gguf can dequantize: F32, F16, BF16, Q4_0, Q4_1,
  Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ*), except the Q4_1 projections of a file whose every
  projection is Q4_1: those stay in llama.cpp's blocks for the ``q4_1`` quant method
  (config.json declares ``quantization_config: {quant_method: q4_1, format: gguf}``, so
  ``quant=auto`` picks ``q4_1``; any other ``quant`` takes the file dequantized).
  llama.cpp stores the q/k rows of ``llama`` files permuted for its interleaved RoPE;
  they are put back in transformers' order, as transformers' own GGUF loader does.
- Tokenizer and chat template: transformers builds a fast tokenizer from the file's
  ``tokenizer.ggml.*`` metadata and ``tokenizer.chat_template`` (offline).

``gguf_model_dir`` writes those facts (config.json, generation_config.json, tokenizer
files) once into a small directory in the toolkit cache beside a link to the file, so the
rest of the toolkit takes a GGUF as any model directory; the weights are read from the
file itself at every load (toolkit.models.loader). gguf_convert.py reuses the same pieces
to write a dense safetensors copy instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from toolkit.quant.base import ModelLoadError
from toolkit.quant.q4_1 import GGUF_BLOCKS

GGUF_SUFFIX = ".gguf"
LINKED_FILE = "model.gguf"
"""Name of the link to the GGUF file inside its model directory."""
GGUF_FORMAT = "gguf"
"""``quantization_config.format`` of a checkpoint whose packed tensors are GGUF blocks."""

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
_PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
_SAMPLING_KEYS = {
    "general.sampling.temp": "temperature", "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p", "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}
"""GGUF sampling metadata -> the generation_config.json key it becomes."""


class GGUFError(ModelLoadError):
    """A GGUF file that cannot be served: unreadable, or an architecture, tensor, quant
    type or RoPE scaling this toolkit does not support (one line, naming it)."""


@dataclass(frozen=True)
class GGUFArchitecture:
    """How one ``general.architecture`` maps onto a transformers architecture."""

    hf_architecture: str
    """config.json "architectures"[0]."""
    model_type: str
    """config.json "model_type"."""
    permuted_qk: bool
    """llama.cpp's converter permuted the q/k rows (interleaved RoPE) and we undo it."""


ARCHITECTURES = {
    "llama": GGUFArchitecture("LlamaForCausalLM", "llama", permuted_qk=True),
    "qwen2": GGUFArchitecture("Qwen2ForCausalLM", "qwen2", permuted_qk=False),
}


def is_gguf_path(path: pathlib.Path | str) -> bool:
    """A path naming a GGUF file (by its suffix)."""
    return str(path).lower().endswith(GGUF_SUFFIX)


def open_gguf(path: pathlib.Path | str):
    """A ``gguf.GGUFReader`` over ``path`` (memory-mapped); GGUFError when it is not one."""
    from gguf import GGUFReader

    path = pathlib.Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    try:
        return GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise GGUFError(f"{path}: not a readable GGUF file ({reason})") from None


def read_metadata(reader) -> dict:
    """Scalar (and string) GGUF metadata; big arrays such as the vocabulary are skipped."""
    values = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and len(field.data) > 1:
            continue
        values[key] = field.contents()
    return values


def architecture_of(meta: dict) -> tuple[str, GGUFArchitecture]:
    """(GGUF architecture name, its mapping); GGUFError listing the supported ones."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"GGUF architecture {arch!r} is not supported; supported: "
                        f"{', '.join(ARCHITECTURES)}")
    return arch, ARCHITECTURES[arch]


def hf_tensor_name(gguf_name: str) -> str:
    """llama.cpp tensor name -> transformers Llama-family parameter name."""
    if gguf_name in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[gguf_name]
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise GGUFError(f"unknown GGUF tensor {gguf_name!r}")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"


def unpermute_rotary_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order: per head it stores the even rotary rows first,
    then the odd ones (interleaved RoPE); HF's rotate_half wants the two halves apart.
    Rows move whole, so this applies to packed blocks ([rows, bytes]) as well.

    weight: [num_heads * head_dim, ...] -> same shape.
    """
    rows = weight.shape[0]
    half = rows // num_heads // 2
    per_head = weight.reshape(num_heads, half, 2, *weight.shape[1:])
    return per_head.transpose(1, 2).reshape(weight.shape)


def build_hf_config(meta: dict, has_output: bool, num_embedding_rows: int | None = None) -> dict:
    """config.json of the transformers checkpoint a GGUF's metadata describes.

    ``has_output``: the file has its own ``output.weight`` (else the embedding is tied);
    ``num_embedding_rows``: the vocabulary size when the metadata does not say it.
    """
    arch, mapping = architecture_of(meta)
    num_heads = meta[f"{arch}.attention.head_count"]
    hidden = meta[f"{arch}.embedding_length"]
    head_dim = meta.get(f"{arch}.attention.key_length", hidden // num_heads)
    rotary_dim = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if rotary_dim != head_dim:
        raise GGUFError(f"GGUF {arch}.rope.dimension_count={rotary_dim} (partial rotary) is "
                        f"not supported; head_dim is {head_dim}")
    eos_ids = [meta[key] for key in ("tokenizer.ggml.eos_token_id",
                                     "tokenizer.ggml.eot_token_id") if key in meta]
    config = {
        "architectures": [mapping.hf_architecture],
        "model_type": mapping.model_type,
        "hidden_size": hidden,
        "intermediate_size": meta[f"{arch}.feed_forward_length"],
        "num_hidden_layers": meta[f"{arch}.block_count"],
        "num_attention_heads": num_heads,
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", num_heads),
        "head_dim": head_dim,
        "max_position_embeddings": meta[f"{arch}.context_length"],
        "rms_norm_eps": float(meta[f"{arch}.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "vocab_size": meta.get(f"{arch}.vocab_size", num_embedding_rows),
        "tie_word_embeddings": not has_output,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": list(dict.fromkeys(eos_ids)) if len(eos_ids) > 1 else (
            eos_ids[0] if eos_ids else None),
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    if mapping.model_type == "qwen2":
        config["use_sliding_window"] = False
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear",
                                  "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    elif scaling != "none":
        raise GGUFError(f"GGUF rope scaling {scaling!r} is not supported (none, linear)")
    return config


def generation_config(meta: dict, config: dict) -> dict:
    """generation_config.json: bos/eos ids and the file's sampling defaults, if any."""
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    for key, name in _SAMPLING_KEYS.items():
        if key in meta:
            generation[name] = round(float(meta[key]), 6)
    return generation


def _projection_types(reader) -> set:
    """The quant types of the decoder projections (q/k/v/o, gate/up/down)."""
    types = set()
    for tensor in reader.tensors:
        match = _LAYER_TENSOR.fullmatch(tensor.name)
        if match and match.group(2) in _PROJECTIONS and match.group(3) == "weight":
            types.add(tensor.tensor_type)
    return types


def packed_quant_config(reader) -> dict | None:
    """quantization_config for a file whose every projection is Q4_1 (served packed by
    the ``q4_1`` method), else None (the weights are dequantized at load)."""
    from gguf import GGMLQuantizationType

    if _projection_types(reader) == {GGMLQuantizationType.Q4_1}:
        return {"quant_method": "q4_1", "group_size": 32, "format": GGUF_FORMAT}
    return None


def check_tensors(reader) -> None:
    """Every tensor has a known name and a quant type gguf can dequantize; GGUFError
    naming the first that does not (before any weight is read)."""
    from gguf.quants import dequantize

    checked = set()
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            raise GGUFError("GGUF with baked rope_freqs (Llama 3.1+ rope scaling) is not "
                            "supported")
        hf_tensor_name(tensor.name)
        qtype = tensor.tensor_type
        if qtype in checked:
            continue
        block_bytes = int(tensor.data.shape[-1]) if tensor.data.ndim else 1
        try:
            dequantize(np.zeros((1, block_bytes), dtype=tensor.data.dtype), qtype)
        except (NotImplementedError, ValueError, AssertionError):
            raise GGUFError(f"GGUF tensor {tensor.name!r} has quant type {qtype.name}, which "
                            "cannot be dequantized (gguf has no dequantizer for it)") from None
        checked.add(qtype)


def _unpermuted(name: str, weight: torch.Tensor, config: dict) -> torch.Tensor:
    if ".q_proj." in name:
        return unpermute_rotary_rows(weight, config["num_attention_heads"])
    if ".k_proj." in name:
        return unpermute_rotary_rows(weight, config["num_key_value_heads"])
    return weight


def iter_gguf_weights(gguf_path: pathlib.Path | str, config: dict, keep_q4_1_blocks: bool,
                      progress: Callable[[Iterator], Iterator] | None = None,
                      ) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) for every tensor of the file, one in memory at a time.

    Dequantized tensors are float32 (the model casts them to its dtype). With
    ``keep_q4_1_blocks`` (the ``q4_1`` method on a file that declares it) a Q4_1
    projection comes as ``<name>.q4_1_blocks``: uint8 [out, in / 32 * 20], llama.cpp's
    blocks row by row. q/k rows are un-permuted for architectures that need it.
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    reader = open_gguf(gguf_path)
    _, mapping = architecture_of(read_metadata(reader))
    tensors = reader.tensors if progress is None else progress(reader.tensors)
    for tensor in tensors:
        name = hf_tensor_name(tensor.name)
        if keep_q4_1_blocks and tensor.tensor_type == GGMLQuantizationType.Q4_1 and name.endswith(
                "_proj.weight"):
            name = name.removesuffix("weight") + GGUF_BLOCKS
            weight = torch.from_numpy(np.array(tensor.data, dtype=np.uint8))
        else:
            values = dequantize(tensor.data, tensor.tensor_type)
            weight = torch.from_numpy(np.array(values, dtype=np.float32))
        if mapping.permuted_qk:
            weight = _unpermuted(name, weight, config)
        yield name, weight.contiguous()


def read_gguf_config(reader) -> dict:
    """config.json (without quantization_config) of the model in ``reader``'s file."""
    meta = read_metadata(reader)
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embedding is None:
        raise GGUFError("GGUF has no token_embd.weight tensor")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    try:
        return build_hf_config(meta, has_output, num_embedding_rows=int(embedding.shape[-1]))
    except KeyError as exc:
        raise GGUFError(f"GGUF metadata has no {exc.args[0]!r}") from None


def save_tokenizer(gguf_path: pathlib.Path, out_dir: pathlib.Path) -> None:
    """The file's tokenizer and chat template, as transformers builds them from its
    metadata, saved into ``out_dir`` (chat_template.jinja too)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent),
                                                  gguf_file=gguf_path.name)
    except (ValueError, KeyError, OSError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise GGUFError(f"{gguf_path}: no usable tokenizer in its metadata "
                        f"(tokenizer.ggml.*): {reason}") from None
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


def write_model_files(gguf_path: pathlib.Path, reader, out_dir: pathlib.Path,
                      quant_config: dict | None = None) -> dict:
    """config.json (with ``quant_config`` as its quantization_config, if given),
    generation_config.json and the tokenizer into ``out_dir``; returns the config."""
    config = read_gguf_config(reader)
    if quant_config is not None:
        config["quantization_config"] = quant_config
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    generation = generation_config(read_metadata(reader), config)
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2))
    save_tokenizer(gguf_path, out_dir)
    return config


def build_dir_once(out_dir: pathlib.Path, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Fill ``out_dir`` with ``write(work_dir)`` in a temporary sibling, then rename it into
    place; an existing ``out_dir`` is taken as finished (a concurrent builder may win)."""
    if out_dir.is_dir():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write(work_dir)
        work_dir.chmod(0o755)
        os.rename(work_dir, out_dir)
    except OSError:
        if not out_dir.is_dir():
            raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return out_dir


def _file_key(gguf_path: pathlib.Path) -> str:
    """Changes when the file (its path, size or modification time) changes."""
    stat = gguf_path.stat()
    identity = f"{gguf_path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def gguf_model_dir(gguf_path: pathlib.Path | str, cache_dir: pathlib.Path) -> pathlib.Path:
    """The model directory of a GGUF file: config.json, generation_config.json and the
    tokenizer from its metadata, and ``model.gguf``, a link to the file (whose tensors
    load_model reads). Built once under ``cache_dir`` per file version; the file is
    checked first (readable, supported architecture, tensor names and types)."""
    gguf_path = pathlib.Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise GGUFError(f"{gguf_path}: no such GGUF file")
    out_dir = cache_dir / f"{gguf_path.stem}-{_file_key(gguf_path)}"
    if (out_dir / "config.json").is_file():
        return out_dir
    reader = open_gguf(gguf_path)  # parses every field, the vocabulary too: seconds
    try:
        read_gguf_config(reader)
        check_tensors(reader)
    except GGUFError as exc:
        raise GGUFError(f"{gguf_path}: {exc}") from None

    def write(work_dir: pathlib.Path) -> None:
        write_model_files(gguf_path, reader, work_dir, packed_quant_config(reader))
        (work_dir / LINKED_FILE).symlink_to(gguf_path)

    return build_dir_once(out_dir, write)


def single_gguf_in(directory: pathlib.Path) -> pathlib.Path | None:
    """The one *.gguf file of a directory that is not a model directory itself (no
    config.json); None when there is none; GGUFError when there are several."""
    if (directory / "config.json").is_file():
        return None
    found = sorted(p for p in directory.iterdir() if is_gguf_path(p) and p.is_file())
    if len(found) > 1:
        raise GGUFError(f"{directory} holds {len(found)} GGUF files "
                        f"({', '.join(p.name for p in found[:4])}); set model.path to one")
    return found[0] if found else None
