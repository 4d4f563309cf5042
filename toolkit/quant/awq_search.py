"""AWQ's per-layer searches: activation-aware channel scales, then per-group clipping.

Re-implements AutoAWQ's algorithm (casper-hansen/AutoAWQ, awq/quantize/quantizer.py) on
the functional layer of toolkit/quant/dense_llama.py. For each group of projections that
share an input, channel scales ``s = x_mean**r / w_mean**(1 - r)`` are tried over a grid
of ratios r; the projections are fake-quantized as ``Q(W * s) / s`` and the block they
feed is run; the s with the least output MSE is folded into the op before the group (a
norm's weight, or the rows of the previous projection) and into the projections' columns,
which leaves the float function unchanged. Then each projection but q/k gets its
per-(row, group) clipping range chosen to minimise the error of ``x @ Q(clamp(W))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from toolkit.quant.dense_llama import LayerContext, LayerWeights, linear, mlp, self_attn


@dataclass(frozen=True)
class AwqSettings:
    """The knobs of AWQ's searches (QuantConfig carries them from YAML)."""

    group_size: int = 128
    """Input features per quantization group."""
    num_grid_points: int = 20
    """Ratios tried by the scale search: 0, 1/n, ..., (n-1)/n."""
    duo_scaling: bool = True
    """Scales from activations and weights (x_mean**r / w_mean**(1-r)); false uses
    activations only (x_mean**r)."""
    apply_clip: bool = True
    """Run the clipping search (q/k projections are never clipped)."""
    max_clip_shrink: float = 0.5
    """Smallest clipping range tried, as a fraction of a group's max |w| taken away."""
    num_clip_grid_points: int = 20
    """The clipping range shrinks in steps of 1/n of the group's max |w|."""
    num_clip_tokens: int = 512
    """Calibration tokens (evenly spaced) the clipping search measures on."""


Inspect = Callable[[LayerWeights, LayerContext, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ScaleGroup:
    """Projections sharing one input, the op the scales fold into, and the block whose
    output the scale search compares."""

    prev_op: str
    """Name of the norm or projection that produces the group's input."""
    linears: tuple[str, ...]
    """The projections scaled together."""
    inspect: Inspect
    """Group input [B, L, K] -> the inspected block's output."""


def _o_proj(weights: LayerWeights, ctx: LayerContext, x: torch.Tensor) -> torch.Tensor:
    return linear(weights, "self_attn.o_proj", x)


def _down_proj(weights: LayerWeights, ctx: LayerContext, x: torch.Tensor) -> torch.Tensor:
    return linear(weights, "mlp.down_proj", x)


def _mlp(weights: LayerWeights, ctx: LayerContext, x: torch.Tensor) -> torch.Tensor:
    return mlp(weights, x)


LLAMA_SCALE_GROUPS = (
    ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
               self_attn),
    ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), _o_proj),
    ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), _mlp),
    ScaleGroup("mlp.up_proj", ("mlp.down_proj",), _down_proj),
)
"""AutoAWQ's groups for Llama, in order."""

MAX_Q = 15
"""Largest 4-bit code."""
NEVER_CLIPPED = ("self_attn.q_proj", "self_attn.k_proj")
"""Their errors are shaped by softmax, not by the projection output (AutoAWQ skips them)."""


def fake_quantize(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, K] -> the same weight after 4-bit round-to-nearest per group, dequantized.

    The arithmetic of awq_format.quantize_groups (which writes the checkpoint), without
    its integer outputs: the searches call this hundreds of times per layer.
    """
    n, k = weight.shape
    w = weight.float().view(n, k // group_size, group_size)
    w_max, w_min = w.amax(dim=-1, keepdim=True), w.amin(dim=-1, keepdim=True)
    scales = (w_max - w_min).clamp(min=1e-5) / MAX_Q
    zeros = torch.round(-w_min / scales).clamp(0, MAX_Q)
    q = (torch.round(w / scales) + zeros).clamp(0, MAX_Q)
    return ((q - zeros) * scales).view(n, k).to(weight.dtype)


def applies(group: ScaleGroup, weights: LayerWeights) -> bool:
    """Whether scales can fold into ``group.prev_op``: a projection before a projection
    needs one output row per input column (no GQA mismatch between v_proj and o_proj)."""
    if not group.prev_op.endswith("_proj"):
        return True
    prev = weights[f"{group.prev_op}.weight"]
    return prev.shape[0] == weights[f"{group.linears[0]}.weight"].shape[1]


def _weight_mean(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """Mean over rows of |W| / (max |W| of its group), for the group's stacked W: [K]."""
    stacked = torch.cat(weights).float()  # [sum N, K]
    grouped = stacked.abs().view(-1, group_size)
    relative = grouped / (grouped.amax(dim=1, keepdim=True) + 1e-6)
    return relative.view(stacked.shape).mean(0)


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor, ratio: float,
                     duo_scaling: bool) -> torch.Tensor:
    """AutoAWQ's channel scales for one grid ratio, normalised to geometric mid 1: [K]."""
    if duo_scaling:
        scales = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
    else:
        scales = x_mean.pow(ratio).clamp(min=1e-4)
    scales = scales / (scales.max() * scales.min()).sqrt()
    return torch.nan_to_num(scales, nan=1.0, posinf=1.0, neginf=1.0)


def cast_weights(weights: LayerWeights, dtype: torch.dtype) -> LayerWeights:
    """``weights`` in ``dtype`` (the forward passes' dtype; searches keep float32)."""
    return {name: w.to(dtype) for name, w in weights.items()}


def _with_scaled(weights: LayerWeights, forward: LayerWeights, linears: tuple[str, ...],
                 scales: torch.Tensor, group_size: int) -> LayerWeights:
    """A copy of ``forward`` (``weights`` in the forward dtype) whose ``linears`` are
    Q(W * s) / s, computed in float32 from ``weights``."""
    trial = dict(forward)
    for name in linears:
        w = weights[f"{name}.weight"]
        dense = fake_quantize(w * scales, group_size) / scales
        trial[f"{name}.weight"] = dense.to(forward[f"{name}.weight"].dtype)
    return trial


def search_scales(weights: LayerWeights, ctx: LayerContext, group: ScaleGroup,
                  x: torch.Tensor, settings: AwqSettings) -> torch.Tensor:
    """The grid ratio's scales [K] whose fake-quantized group gives the least MSE of
    ``group.inspect`` on the group's input ``x`` [B, L, K]. ``weights`` are float32; the
    block runs in x's dtype."""
    x_mean = x.abs().reshape(-1, x.shape[-1]).float().mean(0)  # [K]
    w_mean = _weight_mean([weights[f"{n}.weight"] for n in group.linears], settings.group_size)
    forward = cast_weights(weights, x.dtype)
    reference = group.inspect(forward, ctx, x)
    best_loss, best_scales = float("inf"), torch.ones_like(x_mean)
    for step in range(settings.num_grid_points):
        scales = candidate_scales(x_mean, w_mean, step / settings.num_grid_points,
                                  settings.duo_scaling)
        trial = _with_scaled(weights, forward, group.linears, scales, settings.group_size)
        loss = (group.inspect(trial, ctx, x) - reference).float().pow(2).mean().item()
        if loss < best_loss:
            best_loss, best_scales = loss, scales
    return best_scales


def fold_scales(weights: LayerWeights, group: ScaleGroup, scales: torch.Tensor,
                ) -> LayerWeights:
    """A copy of ``weights`` with ``scales`` [K] divided out of the previous op and
    multiplied into the group's input columns (the same function in exact arithmetic)."""
    folded = dict(weights)
    for name in group.linears:
        folded[f"{name}.weight"] = weights[f"{name}.weight"] * scales
    if group.prev_op.endswith("_proj"):
        for suffix, view in (("weight", (-1, 1)), ("bias", (-1,))):
            key = f"{group.prev_op}.{suffix}"
            if key in weights:
                prev = weights[key].clone()
                prev[-scales.numel():] /= scales.view(view)
                folded[key] = prev
    else:
        folded[f"{group.prev_op}.weight"] = weights[f"{group.prev_op}.weight"] / scales
    return folded


def _sample_tokens(x: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[..., K] -> [<= num_tokens, K], evenly strided over the flattened tokens."""
    flat = x.reshape(-1, x.shape[-1])
    return flat[::max(1, flat.shape[0] // num_tokens)][:num_tokens]


def search_clip(weight: torch.Tensor, x: torch.Tensor, settings: AwqSettings,
                max_rows_per_batch: int = 1024) -> torch.Tensor:
    """Per (row, group) clipping bound [N, K/G] minimising the MSE of each group's partial
    dot products x_g . Q(clamp(w_g)) vs x_g . w_g over sampled tokens of x [..., K]."""
    group_size = settings.group_size
    k = weight.shape[1]
    tokens = _sample_tokens(x, settings.num_clip_tokens).float()  # [T, K]
    grouped_tokens = tokens.view(-1, k // group_size, group_size).transpose(0, 1)
    # NOTE: mean_t (x_g . d)^2 = d^T C_g d with C_g = X_g^T X_g / T [K/G, G, G], so the
    # error of a candidate costs O(G^2) per (row, group) instead of O(T * G).
    gram = torch.bmm(grouped_tokens.transpose(1, 2), grouped_tokens) / tokens.shape[0]
    bounds = [_clip_rows(rows, gram, settings)
              for rows in weight.float().split(max_rows_per_batch)]
    return torch.cat(bounds)


def _clip_rows(rows: torch.Tensor, gram: torch.Tensor, settings: AwqSettings,
               ) -> torch.Tensor:
    """rows [R, K], gram [K/G, G, G] -> best clipping bound [R, K/G]."""
    group_size = settings.group_size
    grouped = rows.view(rows.shape[0], -1, group_size).transpose(0, 1)  # [K/G, R, G]
    max_abs = grouped.abs().amax(dim=-1)  # [K/G, R]
    best_bound, best_err = max_abs.clone(), torch.full_like(max_abs, float("inf"))
    num_steps = int(settings.max_clip_shrink * settings.num_clip_grid_points)
    for step in range(num_steps):
        bound = max_abs * (1 - step / settings.num_clip_grid_points)  # [K/G, R]
        clipped = grouped.clamp(-bound.unsqueeze(-1), bound.unsqueeze(-1))
        delta = fake_quantize(clipped.reshape(-1, group_size), group_size).view_as(
            clipped) - grouped  # [K/G, R, G]
        err = (torch.bmm(delta, gram) * delta).sum(dim=-1)  # [K/G, R]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_bound = torch.where(better, bound, best_bound)
    return best_bound.t().contiguous()


def clip_weight(weight: torch.Tensor, bound: torch.Tensor, group_size: int) -> torch.Tensor:
    """weight [N, K] clamped to ±bound [N, K/G] per group."""
    n, k = weight.shape
    grouped = weight.view(n, k // group_size, group_size)
    limit = bound.unsqueeze(-1).to(weight.dtype)
    return grouped.clamp(-limit, limit).view(n, k)


def awq_layer(weights: LayerWeights, ctx: LayerContext, inputs: dict[str, torch.Tensor],
              settings: AwqSettings) -> LayerWeights:
    """One layer's float32 weights after scale search and folding, then clipping: what
    gets quantized. ``inputs``: each projection's recorded input [B, L, K] from the
    original layer, in the forward dtype. All scales are searched on the original weights,
    then folded (as AutoAWQ)."""
    groups = [g for g in LLAMA_SCALE_GROUPS if applies(g, weights)]
    found = [(g, search_scales(weights, ctx, g, inputs[g.linears[0]], settings))
             for g in groups]
    scaled_inputs = dict(inputs)
    for group, scales in found:
        weights = fold_scales(weights, group, scales)
        for name in group.linears:
            scaled_inputs[name] = inputs[name] / scales.to(inputs[name].dtype)
    if settings.apply_clip:
        weights = _clip_all(weights, scaled_inputs, settings)
    return weights


def _clip_all(weights: LayerWeights, inputs: dict[str, torch.Tensor],
              settings: AwqSettings) -> LayerWeights:
    clipped = dict(weights)
    for name, x in inputs.items():
        if name in NEVER_CLIPPED:
            continue
        key = f"{name}.weight"
        bound = search_clip(weights[key], x, settings)
        clipped[key] = clip_weight(weights[key], bound, settings.group_size)
    return clipped
