"""The Llama family (Llama 2/3/3.1, Mistral, Qwen2, SmolLM2) in plain torch.

Ragged layout: tokens of all requests are concatenated, ``[T, hidden]``, no batch axis.
Attention goes through an AttentionBackend that the runner has already planned.
q/k/v and gate/up are fused at load time so a decode step runs few, large matmuls. The four
projections are QuantLinear layers: the QuantMethod given to the model decides how their
weights are stored and multiplied; the model knows nothing else about quantization.
On CUDA the norms (each residual add fused with the norm after it), rotary and SiLU-and-mul
run Triton kernels (toolkit/kernels, chosen in toolkit/layers); on the CPU they take the
kernel route the model is built with (``kernels``: the C++ kernels or torch ops, see
toolkit/kernels/route.py).
Mistral's sliding window is not applied: build_runtime caps max_model_len to
``sliding_window``, within which full attention equals windowed attention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.attention.base import AttentionBackend
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.layers.activation import silu_and_mul
from toolkit.layers.linear import batch_variance, linear, pack_weight
from toolkit.layers.pipeline_parallel import PipelineStage
from toolkit.layers.rmsnorm import fused_add_rms_norm, rms_norm
from toolkit.layers.rotary import RotaryEmbedding, rope_parameters_from_hf_config
from toolkit.layers.tensor_parallel import TensorParallel
from toolkit.models.native_decoder import NativeDecoderStack
from toolkit.quant.base import QuantMethod
from toolkit.quant.int8_lm_head import Int8LMHead
from toolkit.quant.linear import QuantLinear, ShardLoadError
from toolkit.quant.none import NoQuant

_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)")
_PROJECTIONS = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
                "o_proj": ("o_proj", 0), "gate_proj": ("gate_up_proj", 0),
                "up_proj": ("gate_up_proj", 1), "down_proj": ("down_proj", 0)}
"""HF projection name -> (fused QuantLinear attribute, part index)."""
_ROW_PARALLEL = ("o_proj", "down_proj")
"""Projections split along their input features under tensor parallelism (the others
along their output features)."""
_NOT_BUILT = object()
"""LlamaForCausalLM.decoder_stack before its first forward."""


class WeightLoadError(ValueError):
    """Checkpoint names or shapes that do not fit the model."""


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


def attention_heads(config: dict[str, Any]) -> tuple[int, int, int]:
    """(query heads, key/value heads, head width) of a config.json."""
    num_qo_heads = config["num_attention_heads"]
    return (num_qo_heads, config.get("num_key_value_heads") or num_qo_heads,
            config.get("head_dim") or config["hidden_size"] // num_qo_heads)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention + SwiGLU MLP with fused projections; its norms and SiLU-and-mul
    take the CPU kernel route ``kernels``."""

    def __init__(self, config: dict[str, Any], layer_id: int, dtype: torch.dtype,
                 device: torch.device | str, quant_method: QuantMethod, *,
                 kernels: KernelRoute = TORCH, parallel: TensorParallel | None = None) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.kernels = kernels
        self.parallel = parallel
        """This rank's tensor-parallel place (``config`` is then its shard's), or None."""
        hidden = config["hidden_size"]
        self.num_qo_heads, self.num_kv_heads, self.head_dim = attention_heads(config)
        self.eps = config["rms_norm_eps"]
        self.qkv_sizes = (self.num_qo_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                          self.num_kv_heads * self.head_dim)
        intermediate = config["intermediate_size"]
        is_qwen2 = _architecture(config).startswith("Qwen2")
        has_qkv_bias = bool(config.get("attention_bias", False)) or is_qwen2
        has_o_bias = bool(config.get("attention_bias", False)) and not is_qwen2
        if config.get("mlp_bias", False):
            raise WeightLoadError("mlp_bias=True is not supported")
        if config.get("hidden_act", "silu") != "silu":
            raise WeightLoadError(f"hidden_act {config['hidden_act']!r} is not supported (silu)")
        self.input_layernorm = _param((hidden,), dtype, device)
        self.post_attention_layernorm = _param((hidden,), dtype, device)

        def proj(in_features: int, output_sizes: tuple[int, ...], bias: bool) -> QuantLinear:
            return QuantLinear(in_features, output_sizes, bias, quant_method, dtype, device)

        self.qkv_proj = proj(hidden, self.qkv_sizes, has_qkv_bias)
        self.o_proj = proj(self.qkv_sizes[0], (hidden,), has_o_bias)
        self.gate_up_proj = proj(hidden, (intermediate, intermediate), False)
        self.down_proj = proj(intermediate, (hidden,), False)

    def projections(self) -> tuple[QuantLinear, ...]:
        return self.qkv_proj, self.o_proj, self.gate_up_proj, self.down_proj

    def dense_weights(self) -> dict[str, nn.Parameter]:
        """Checkpoint name (after ``model.layers.N.``) -> parameter, for the layer's
        tensors that are not projections (the norms); a subclass adds its own."""
        return {"input_layernorm.weight": self.input_layernorm,
                "post_attention_layernorm.weight": self.post_attention_layernorm}

    def rotate_qk(self, heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  rotary: RotaryEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """heads: [T, Hq + 2 Hkv, D] (q, k, v heads) -> rotated q [T, Hq, D], k [T, Hkv, D].
        A subclass changes q and k before the rotation here (Qwen3's per-head norms)."""
        return rotary.apply_qk(heads, self.num_qo_heads, self.num_kv_heads, cos, sin)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, cos: torch.Tensor,
                sin: torch.Tensor, rotary: RotaryEmbedding,
                attn: AttentionBackend) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden: [T, hidden], the previous layer's MLP output (or the embeddings, with
        ``residual`` None); residual: [T, hidden], the residual stream before that output
        was added -> (this layer's MLP output, residual stream before it), [T, hidden] each.

        vLLM's layout: each residual add is fused with the norm that follows it, so a
        layer runs two fused add+norm kernels on the Triton route; the torch route does
        the same adds and norms as a plain pre-norm layer, in the same order.
        """
        num_tokens = hidden.shape[0]
        kernels = self.kernels
        if residual is None:
            residual = hidden
            x = rms_norm(hidden, self.input_layernorm, self.eps, kernels=kernels)
        else:
            x, residual = fused_add_rms_norm(hidden, residual, self.input_layernorm, self.eps,
                                             kernels=kernels)
        qkv = self.qkv_proj(x)  # [T, (Hq + 2 Hkv) * D]
        heads = qkv.view(num_tokens, -1, self.head_dim)  # [T, Hq + 2 Hkv, D]
        q, k = self.rotate_qk(heads, cos, sin, rotary)
        v = heads[:, self.num_qo_heads + self.num_kv_heads:]  # [T, Hkv, D]
        attn_out = attn.forward(self.layer_id, q, k, v)  # [T, Hq, D]
        attn_out = self._reduce(self.o_proj(attn_out.reshape(num_tokens, -1)))  # [T, hidden]
        x, residual = fused_add_rms_norm(attn_out, residual, self.post_attention_layernorm,
                                         self.eps, kernels=kernels)
        mlp_out = self.down_proj(silu_and_mul(self.gate_up_proj(x), kernels=kernels))
        return self._reduce(mlp_out), residual

    def _reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """A row-parallel projection's partial sums [T, hidden] -> the full output."""
        return partial if self.parallel is None else self.parallel.all_reduce(partial)


def _copy_checked(name: str, tensor: torch.Tensor, target: torch.Tensor) -> None:
    if tuple(tensor.shape) != tuple(target.shape):
        raise WeightLoadError(f"{name}: shape {tuple(tensor.shape)}, "
                              f"expected {tuple(target.shape)}")
    target.copy_(tensor)


def _architecture(config: dict[str, Any]) -> str:
    return (config.get("architectures") or ["LlamaForCausalLM"])[0]


class LlamaForCausalLM(nn.Module):
    """Built from a config.json dict; weights arrive later through ``load_weights``.

    ``quant_method`` stores and multiplies the decoder projections (default: dense,
    unpacked); embeddings, norms and the LM head stay dense in ``dtype``.
    ``kernels``: the CPU kernel route (toolkit.kernels.route) of every norm, rotary and
    SiLU-and-mul of the model, chosen by whoever builds it (build_runtime, through
    load_model); default the torch ops.
    ``parallel``: this rank's place in a tensor-parallel group (toolkit.layers.
    tensor_parallel): the model then holds its shard of every weight, ``load_weights``
    takes the full checkpoint tensors and keeps that shard, and ``forward`` and
    ``compute_logits`` are collectives every rank of the group runs.
    ``pipeline``: this rank's stage of a pipeline (toolkit.layers.pipeline_parallel): the
    model then holds only the stage's layers (``self.layers[i]`` is global layer
    ``first_layer + i``, attending with the local id ``i`` over a KV pool of the stage's
    layers), the embedding on the first stage, the final norm and the LM head on the last
    (which loads the embedding as its LM head when they are tied); ``forward`` receives
    the previous stage's activations and sends its own to the next, ``compute_logits``
    returns the last stage's logits to the driver (elsewhere off the last stage: None).
    """

    decoder_layer_cls: type[LlamaDecoderLayer] = LlamaDecoderLayer
    """The layer class built ``num_hidden_layers`` times (a subclass's own layer)."""

    def __init__(self, config: dict[str, Any], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu",
                 quant_method: QuantMethod | None = None, *,
                 kernels: KernelRoute = TORCH, parallel: TensorParallel | None = None,
                 pipeline: PipelineStage | None = None) -> None:
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.kernels = kernels
        self.parallel = parallel
        self.pipeline = pipeline
        self.quant_method = quant_method or NoQuant()
        hidden = config["hidden_size"]
        vocab_size = config["vocab_size"]
        self.eps = config["rms_norm_eps"]
        self.tie_word_embeddings = bool(config.get("tie_word_embeddings", False))
        layer_config = config if parallel is None else parallel.local_config(config)
        sharding = {} if parallel is None else {"parallel": parallel}
        num_rows = vocab_size if parallel is None else parallel.vocab_range(vocab_size)[1]
        first_stage = pipeline is None or pipeline.is_first
        last_stage = pipeline is None or pipeline.is_last
        self.first_layer, end_layer = ((0, config["num_hidden_layers"]) if pipeline is None
                                       else pipeline.layer_range)
        self.embed_tokens = _param((num_rows, hidden), dtype, device) if first_stage else None
        self.layers = nn.ModuleList(
            self.decoder_layer_cls(layer_config, i, dtype, device, self.quant_method,
                                   kernels=kernels, **sharding)
            for i in range(end_layer - self.first_layer)
        )
        self.norm = _param((hidden,), dtype, device) if last_stage else None
        self.lm_head = None
        if last_stage:
            self.lm_head = (self.embed_tokens if self.tie_word_embeddings and first_stage
                            else _param((num_rows, hidden), dtype, device))
        head_dim = self.layers[0].head_dim
        self.rotary = RotaryEmbedding(rope_parameters_from_hf_config(config), head_dim,
                                      config["max_position_embeddings"], dtype, device,
                                      kernels=kernels)
        self.packed_lm_head: torch.Tensor | None = None
        self.quantized_lm_head: Int8LMHead | None = None
        """The quant method's copy of the LM head, for the steps it covers (q4_1: int8)."""
        self.decoder_stack: NativeDecoderStack | None | object = _NOT_BUILT
        """The layers as one native call, or None; built by the first forward after the
        weights load."""

    def pack_weights(self) -> None:
        """Pre-pack the LM head for oneDNN (bit-identical results; bfloat16 on the CPU, and
        float32 when the quant method is batch-invariant; a no-op otherwise). The projections are packed by their QuantMethod (``none``
        with ``prepack_weights``). Call after ``load_weights``, which drops the copy."""
        if self.lm_head is not None:
            self.packed_lm_head = pack_weight(self.lm_head,
                                              batch_invariant=self.quant_method.batch_invariant)

    def batch_variance(self) -> str | None:
        """Where this CPU's packed matmuls give a row other bits among other rows (one
        weight shape of the projections or the LM head, see linear.batch_variance), or
        None; only meaningful when the quant method is batch-invariant."""
        if self.lm_head is not None:
            variance = "no packed weight" if self.packed_lm_head is None else batch_variance(
                self.lm_head, self.packed_lm_head, self.quant_method.invariant_min_rows)
            if variance is not None:
                return variance
        projections = {tuple(proj.weight.shape): proj for layer in self.layers
                       for proj in layer.projections()}
        for proj in projections.values():
            variance = self.quant_method.batch_variance(proj)
            if variance is not None:
                return variance
        return None

    def unpack_weights(self) -> None:
        """Drop the LM head's packed copy; its matmul goes back to F.linear."""
        self.packed_lm_head = None

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn: AttentionBackend,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, positions: [T] -> final-normed hidden states [T, hidden].
        ``inputs_embeds`` [T, hidden]: the input rows to use instead of the token
        embeddings (a vision-language model's, with image embeddings merged in)."""
        pipeline = self.pipeline
        residual = None
        if inputs_embeds is not None:
            hidden = inputs_embeds
        elif pipeline is not None and not pipeline.is_first:  # [T, hidden] each
            hidden, residual = pipeline.receive_activations(
                input_ids.shape[0], self.config["hidden_size"], self.dtype, input_ids.device)
        elif self.parallel is None:
            hidden = F.embedding(input_ids, self.embed_tokens)  # [T, hidden]
        else:
            hidden = self.parallel.embed(input_ids, self.embed_tokens)  # [T, hidden]
        cos, sin = self.rotary.cos_sin(positions)  # [T, 1, D] each
        stack = self._native_stack() if residual is None else None
        outputs = None if stack is None else stack.forward(hidden, cos, sin, attn)
        if outputs is not None:
            hidden, residual = outputs
        else:
            for layer in self.layers:
                hidden, residual = layer(hidden, residual, cos, sin, self.rotary, attn)
        if pipeline is not None and not pipeline.is_last:
            pipeline.send_activations(hidden, residual)
            return hidden  # not the model's output: only its row count is the step's
        if residual is None:
            return rms_norm(hidden, self.norm, self.eps, kernels=self.kernels)
        return fused_add_rms_norm(hidden, residual, self.norm, self.eps,
                                  kernels=self.kernels)[0]

    def _native_stack(self) -> NativeDecoderStack | None:
        """The layers as one native call (toolkit/models/native_decoder.py), built on first
        use after the weights load; None where this model's layers are not plain Llama
        layers on one rank, or the stack does not run them."""
        if self.decoder_stack is _NOT_BUILT:
            plain = all(type(layer) is LlamaDecoderLayer for layer in self.layers)
            self.decoder_stack = None
            if plain and self.parallel is None and self.pipeline is None:
                self.decoder_stack = NativeDecoderStack.for_layers(self.layers, self.rotary,
                                                                   self.kernels)
        return self.decoder_stack

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """hidden: [N, hidden] -> logits [N, vocab] float32 (under pipeline parallelism:
        on the driver, received from the last stage; None on the other ranks off it)."""
        pipeline = self.pipeline
        if pipeline is not None and not pipeline.is_last:
            if not pipeline.receives_logits:
                return None
            return pipeline.receive_logits(hidden.shape[0], self.config["vocab_size"],
                                           hidden.device)
        logits = self._head_logits(hidden)
        if pipeline is not None and pipeline.returns_logits:
            pipeline.return_logits(logits)
        return logits

    def _head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, hidden] -> this model's LM head logits [N, vocab] float32."""
        logits = None
        if self.quantized_lm_head is not None:
            logits = self.quantized_lm_head.logits(hidden)
        if logits is None:
            method = self.quant_method
            logits = linear(hidden, self.lm_head, None, self.packed_lm_head,
                            method.batch_invariant, method.invariant_min_rows)
        if self.parallel is not None:  # [N, vocab / size] -> [N, vocab]
            logits = self.parallel.gather_logits(logits, self.config["vocab_size"])
        return logits.float()

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors in, fusing q/k/v and gate/up; every parameter must be set.
        Then each projection's QuantMethod converts its tensors (``after_load``)."""
        self.unpack_weights()  # stale after new weights; pack_weights() again afterwards
        self.decoder_stack = _NOT_BUILT
        for layer in self.layers:
            for proj in layer.projections():
                proj.create_params()  # undoes a previous after_load
        expected = self._expected_names()
        seen: set[str] = set()
        for name, tensor in weights:
            if name.endswith("rotary_emb.inv_freq"):
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            if self.pipeline is not None and not self.owns_weight(name):
                continue  # another stage's
            if name not in expected:
                architecture = _architecture(self.config)
                raise WeightLoadError(f"unexpected weight {name!r} for {architecture}")
            self._load_one(name, tensor)
            seen.add(name)
        missing = sorted(expected - seen)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise WeightLoadError(f"{len(missing)} weights missing from the checkpoint: {shown}")
        for layer in self.layers:
            for proj in layer.projections():
                proj.finish_loading()
        if self.lm_head is not None:
            self.quantized_lm_head = self.quant_method.quantize_lm_head(self.lm_head.data)

    def _load_one(self, name: str, tensor: torch.Tensor) -> None:
        """Copy one expected HF tensor into its parameter or fused projection slice."""
        top_level = {"model.embed_tokens.weight": self.embed_tokens,
                     "model.norm.weight": self.norm, "lm_head.weight": self.lm_head}
        if name in top_level:
            if name != "model.norm.weight" and self.parallel is not None:
                tensor = self._vocab_shard(tensor)
            if name == "model.embed_tokens.weight" and self.embed_tokens is None:
                name = "lm_head.weight"  # tied, on the last stage of a pipeline
            _copy_checked(name, tensor, top_level[name].data)
            return
        layer_id, rest = _LAYER_NAME.fullmatch(name).groups()
        layer = self.layers[int(layer_id) - self.first_layer]
        dense = layer.dense_weights()
        if rest in dense:
            _copy_checked(name, tensor, dense[rest].data)
            return
        parts = rest.split(".")  # [module, proj, suffix]
        fused, part = _PROJECTIONS[parts[1]]
        projection = getattr(layer, fused)
        try:
            if self.parallel is not None:
                tensor = self._projection_shard(parts[1], parts[2], tensor, projection)
            projection.load_shard(parts[2], tensor, part)
        except (ShardLoadError, ValueError) as exc:
            raise WeightLoadError(f"{name}: {exc}") from None

    def _vocab_shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows [V/size, hidden] of an embedding or LM head [V, hidden],
        zero past the vocabulary."""
        start, num_rows = self.parallel.vocab_range(tensor.shape[0])
        rows = tensor[start:start + num_rows]
        padding = num_rows - rows.shape[0]
        return F.pad(rows, (0, 0, 0, padding)) if padding else rows

    def _projection_shard(self, proj: str, suffix: str, tensor: torch.Tensor,
                          projection: QuantLinear) -> torch.Tensor:
        """This rank's part of checkpoint tensor ``proj.suffix``: its output features of
        q/k/v/gate/up, its input features of o/down (whose bias only rank 0 adds)."""
        parallel, config = self.parallel, self.config
        head_dim = self.layers[0].head_dim
        num_qo_heads = config["num_attention_heads"]
        num_kv_heads = config.get("num_key_value_heads") or num_qo_heads
        heads = {"q_proj": num_qo_heads, "o_proj": num_qo_heads, "k_proj": num_kv_heads,
                 "v_proj": num_kv_heads}
        if proj in heads:
            first, count = parallel.head_range(heads[proj])
            features = (first * head_dim, count * head_dim)
        else:
            features = parallel.even_range(config["intermediate_size"])
        if proj not in _ROW_PARALLEL:
            return projection.method.shard_tensor(suffix, projection.specs[suffix], tensor,
                                                  features, None)
        if suffix == "bias":
            return tensor if parallel.rank == 0 else torch.zeros_like(tensor)
        return projection.method.shard_tensor(suffix, projection.specs[suffix], tensor, None,
                                              features)

    def owns_weight(self, name: str) -> bool:
        """True when checkpoint tensor ``name`` belongs to this model (under pipeline
        parallelism: to this stage; the loader skips the others' tensors)."""
        match = _LAYER_NAME.fullmatch(name)
        if match is not None:
            return 0 <= int(match.group(1)) - self.first_layer < len(self.layers)
        if name == "model.embed_tokens.weight":
            return self.embed_tokens is not None or (self.tie_word_embeddings
                                                     and self.lm_head is not None)
        if name == "model.norm.weight":
            return self.norm is not None
        if name == "lm_head.weight":
            return self.lm_head is not None
        return True

    def _expected_names(self) -> set[str]:
        names = {"model.embed_tokens.weight", "model.norm.weight"}
        if not self.tie_word_embeddings:
            names.add("lm_head.weight")
        names = {name for name in names if self.owns_weight(name)}
        layer = self.layers[0]
        per_layer = list(layer.dense_weights())
        for proj, (fused, _) in _PROJECTIONS.items():
            module = "mlp" if fused in ("gate_up_proj", "down_proj") else "self_attn"
            per_layer += [f"{module}.{proj}.{suffix}"
                          for suffix in getattr(layer, fused).checkpoint_names()]
        layer_ids = range(self.first_layer, self.first_layer + len(self.layers))
        return names | {f"model.layers.{i}.{n}" for i in layer_ids for n in per_layer}
