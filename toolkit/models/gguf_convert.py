"""GGUF -> a dense safetensors model directory transformers can also read (the ``pkg:``
route of the embedded default model; ``model.path=file.gguf`` serves a file as it is,
see gguf_model.py, which holds the metadata, naming and tokenizer pieces both share).

Weights are dequantized with the ``gguf`` package and written as float32: that is what
transformers' own GGUF loader produces, so our model and the reference see identical
weights (bf16 would cost parity; the serving dtype is chosen at load time anyway).
"""

from __future__ import annotations

import pathlib

from safetensors.torch import save_file
from tqdm import tqdm

from toolkit.models.gguf_model import (
    GGUFError,
    build_dir_once,
    build_hf_config,
    check_tensors,
    hf_tensor_name,
    iter_gguf_weights,
    open_gguf,
    unpermute_rotary_rows,
    write_model_files,
)

GGUFConversionError = GGUFError
"""A GGUF file this converter cannot turn into a checkpoint (the loader's GGUFError)."""

__all__ = ["GGUFConversionError", "build_hf_config", "convert_gguf", "hf_tensor_name",
           "unpermute_rotary_rows"]


def _progress(tensors):
    return tqdm(tensors, desc="dequantizing GGUF", unit="tensor")


def _write_model_dir(gguf_path: pathlib.Path, out_dir: pathlib.Path) -> None:
    reader = open_gguf(gguf_path)
    check_tensors(reader)
    config = write_model_files(gguf_path, reader, out_dir)
    weights = dict(iter_gguf_weights(gguf_path, config, keep_q4_1_blocks=False,
                                     progress=_progress))
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def convert_gguf(gguf_path: pathlib.Path | str, out_dir: pathlib.Path | str) -> pathlib.Path:
    """Convert once: build in a temporary sibling directory, then rename it into place.

    Returns ``out_dir``; an existing ``out_dir`` is taken as a finished conversion.
    """
    gguf_path, out_dir = pathlib.Path(gguf_path), pathlib.Path(out_dir)
    return build_dir_once(out_dir, lambda work_dir: _write_model_dir(gguf_path, work_dir))
