"""Rotary position embeddings (NeoX / HF "rotate_half" layout) with rope scaling.

Parameters come from a checkpoint's config.json in either spelling: classic
(``rope_theta`` + ``rope_scaling`` with ``rope_type`` or ``type``) or transformers-5
(``rope_parameters``). Supported types: default, linear, llama3, yarn, longrope (Phi-3/4;
"su" is its old name), and a partial rotation (``partial_rotary_factor``: only the first
part of each head is rotated, the rest passes through).
On CUDA (``toolkit.kernels.dispatch.use_triton``) ``RotaryEmbedding.apply_qk`` rotates q and
k in one Triton launch; on the CPU, when the embedding was built with the native route
(``kernels``, see toolkit.kernels.route), in one C++ call; elsewhere it is the torch ops of
``apply``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from toolkit.kernels.dispatch import use_triton
from toolkit.kernels.rotary import apply_rotary_triton
from toolkit.kernels.route import TORCH, KernelRoute

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "longrope")
ROPE_TYPE_ALIASES = {"su": "longrope"}
"""Old names transformers still reads, -> the supported type."""


class UnsupportedRopeError(ValueError):
    """A rope type or setting this implementation does not provide."""


@dataclass(frozen=True)
class RopeParameters:
    """Everything that shapes the rotary frequencies of one model."""

    rope_type: str = "default"
    """One of SUPPORTED_ROPE_TYPES."""
    theta: float = 10000.0
    """Base wavelength."""
    factor: float = 1.0
    """Context extension factor (linear, llama3, yarn)."""
    low_freq_factor: float = 1.0
    """llama3: wavelengths above original_max / low_freq_factor are fully scaled."""
    high_freq_factor: float = 4.0
    """llama3: wavelengths below original_max / high_freq_factor are left alone."""
    original_max_position_embeddings: int | None = None
    """Pre-training context length (llama3, yarn)."""
    beta_fast: float = 32.0
    """yarn: extrapolation boundary of the linear ramp."""
    beta_slow: float = 1.0
    """yarn: interpolation boundary of the linear ramp."""
    truncate: bool = True
    """yarn: round the correction range to whole dimensions."""
    attention_factor: float | None = None
    """yarn: scale applied to cos/sin; inferred from factor (and mscale) when None."""
    mscale: float | None = None
    """yarn: numerator mscale for the inferred attention factor."""
    mscale_all_dim: float | None = None
    """yarn: denominator mscale for the inferred attention factor."""
    short_factor: tuple[float, ...] | None = None
    """longrope: per-frequency divisors used while the context fits
    original_max_position_embeddings."""
    long_factor: tuple[float, ...] | None = None
    """longrope: per-frequency divisors used for a longer context."""
    partial_rotary_factor: float = 1.0
    """Fraction of each head's dimensions that is rotated (the first ones)."""


def rope_parameters_from_hf_config(config: dict[str, Any]) -> RopeParameters:
    """Read rope settings from a config.json dict (classic or transformers-5 keys)."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    rope_type = ROPE_TYPE_ALIASES.get(rope_type, rope_type)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedRopeError(
            f"rope type {rope_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    partial = float(params.get("partial_rotary_factor")
                    or config.get("partial_rotary_factor") or 1.0)
    if not 0.0 < partial <= 1.0:
        raise UnsupportedRopeError(f"partial_rotary_factor={partial} must be in (0, 1]")
    original_max = (params.get("original_max_position_embeddings")
                    or (config.get("original_max_position_embeddings")
                        if rope_type == "longrope" else None))
    if rope_type in ("yarn", "longrope") and original_max is None:
        original_max = config["max_position_embeddings"]
    factor = params.get("factor")
    if factor is None:
        extends = rope_type in ("yarn", "longrope")
        factor = config["max_position_embeddings"] / original_max if extends else 1.0
    short_factor, long_factor = params.get("short_factor"), params.get("long_factor")
    if rope_type == "longrope" and (short_factor is None or long_factor is None):
        raise UnsupportedRopeError("rope type 'longrope' needs short_factor and long_factor")
    return RopeParameters(
        rope_type=rope_type,
        theta=float(params.get("rope_theta", config.get("rope_theta", 10000.0))),
        factor=float(factor),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=original_max,
        beta_fast=float(params.get("beta_fast") or 32.0),
        beta_slow=float(params.get("beta_slow") or 1.0),
        truncate=bool(params.get("truncate", True)),
        attention_factor=params.get("attention_factor"),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        short_factor=None if short_factor is None else tuple(map(float, short_factor)),
        long_factor=None if long_factor is None else tuple(map(float, long_factor)),
        partial_rotary_factor=partial,
    )


def _base_inv_freq(theta: float, rotary_dim: int) -> torch.Tensor:
    """[rotary_dim / 2] float32."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim
    return 1.0 / (theta**exponents)


def _llama3_inv_freq(p: RopeParameters, inv_freq: torch.Tensor) -> torch.Tensor:
    old_context_len = p.original_max_position_embeddings
    low_freq_wavelen = old_context_len / p.low_freq_factor
    high_freq_wavelen = old_context_len / p.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / p.factor, inv_freq)
    ramp_width = p.high_freq_factor - p.low_freq_factor
    smooth = (old_context_len / wavelen - p.low_freq_factor) / ramp_width
    smoothed = (1 - smooth) * scaled / p.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_inv_freq(p: RopeParameters, rotary_dim: int) -> tuple[torch.Tensor, float]:
    """Blend interpolated and extrapolated frequencies with YaRN's linear ramp."""

    def correction_dim(num_rotations: float) -> float:
        ratio = p.original_max_position_embeddings / (num_rotations * 2 * math.pi)
        return rotary_dim * math.log(ratio) / (2 * math.log(p.theta))

    low, high = correction_dim(p.beta_fast), correction_dim(p.beta_slow)
    if p.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(rotary_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp
    extrapolated = _base_inv_freq(p.theta, rotary_dim)
    interpolated = extrapolated / p.factor
    inv_freq = interpolated * (1 - extrapolation_weight) + extrapolated * extrapolation_weight
    if p.attention_factor is not None:
        return inv_freq, float(p.attention_factor)
    if p.mscale and p.mscale_all_dim:
        return inv_freq, _yarn_mscale(p.factor, p.mscale) / _yarn_mscale(p.factor, p.mscale_all_dim)
    return inv_freq, _yarn_mscale(p.factor)


def _longrope_inv_freq(p: RopeParameters, rotary_dim: int,
                       max_positions: int | None) -> tuple[torch.Tensor, float]:
    """LongRoPE: the base frequencies divided per dimension by the long factors when the
    context served (``max_positions``) exceeds the pre-training one, by the short factors
    otherwise; cos/sin scaled by the attention factor (inferred from ``factor`` as in the
    LongRoPE paper when not given) either way."""
    original_max = p.original_max_position_embeddings
    uses_long = max_positions is not None and max_positions > original_max
    factors = p.long_factor if uses_long else p.short_factor
    if len(factors) != rotary_dim // 2:
        raise UnsupportedRopeError(f"longrope: {len(factors)} factors for a rotary dimension "
                                   f"of {rotary_dim} (expected {rotary_dim // 2})")
    inv_freq = _base_inv_freq(p.theta, rotary_dim) / torch.tensor(factors, dtype=torch.float32)
    if p.attention_factor is not None:
        return inv_freq, float(p.attention_factor)
    if p.factor <= 1.0:
        return inv_freq, 1.0
    return inv_freq, math.sqrt(1 + math.log(p.factor) / math.log(original_max))


def inv_freq_and_scale(p: RopeParameters, rotary_dim: int,
                       max_positions: int | None = None) -> tuple[torch.Tensor, float]:
    """[rotary_dim / 2] float32 inverse frequencies and the cos/sin scale; ``max_positions``
    (the context the table serves) picks LongRoPE's factor set."""
    if p.rope_type == "yarn":
        return _yarn_inv_freq(p, rotary_dim)
    if p.rope_type == "longrope":
        return _longrope_inv_freq(p, rotary_dim, max_positions)
    inv_freq = _base_inv_freq(p.theta, rotary_dim)
    if p.rope_type == "linear":
        return inv_freq / p.factor, 1.0
    if p.rope_type == "llama3":
        return _llama3_inv_freq(p, inv_freq), 1.0
    return inv_freq, 1.0


class RotaryEmbedding:
    """Precomputed cos/sin tables; ``cos_sin(positions)`` once per forward, ``apply`` per layer.

    ``kernels``: the CPU route ``apply_qk`` takes (the model's; default the torch ops).
    ``max_positions``: the context the table covers; for LongRoPE it also picks the
    factor set once for every sequence (long when it exceeds the pre-training context),
    so a request's cached keys and its new queries are always rotated alike (transformers
    picks per forward by the sequence's length and re-prefills when it crosses over; with
    ``max_positions`` at most original_max_position_embeddings, or a sequence longer than
    it, the two agree). With a partial rotation only the first ``rotary_dim`` dimensions of
    each head turn, on the torch ops.
    """

    def __init__(self, params: RopeParameters, head_dim: int, max_positions: int,
                 dtype: torch.dtype, device: torch.device | str, *,
                 kernels: KernelRoute = TORCH) -> None:
        self.head_dim = head_dim
        self.rotary_dim = int(head_dim * params.partial_rotary_factor)
        """The leading dimensions of each head that are rotated (head_dim unless partial)."""
        self.kernels = kernels if self.rotary_dim == head_dim else TORCH
        self.triton_capable = head_dim & (head_dim - 1) == 0 and self.rotary_dim == head_dim
        """The Triton kernel needs a power-of-two head_dim, rotated whole; others stay on
        torch ops."""
        self.dtype = dtype
        inv_freq, scale = inv_freq_and_scale(params, self.rotary_dim, max_positions)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        self.cos_half = (angles.cos() * scale).to(device)  # [max_positions, D/2] float32
        self.sin_half = (angles.sin() * scale).to(device)  # [max_positions, D/2] float32

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> cos [T, 1, R], signed sin [T, 1, R] in the model dtype
        (R = rotary_dim, D unless the rotation is partial).

        The sine's first half is negated so that ``apply`` can use a roll instead of
        ``rotate_half``'s negate-and-concatenate.
        """
        cos = self.cos_half[positions]
        sin = self.sin_half[positions]
        full_cos = torch.cat((cos, cos), dim=-1).to(self.dtype)
        signed_sin = torch.cat((-sin, sin), dim=-1).to(self.dtype)
        return full_cos.unsqueeze(1), signed_sin.unsqueeze(1)

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: [T, H, D] -> x rotated by each token's position, [T, H, D]."""
        if self.rotary_dim < self.head_dim:
            turned, passed = x.split((self.rotary_dim, self.head_dim - self.rotary_dim), -1)
            turned = turned * cos + turned.roll(self.rotary_dim // 2, dims=-1) * sin
            return torch.cat((turned, passed), dim=-1)
        return x * cos + x.roll(self.head_dim // 2, dims=-1) * sin

    def apply_qk(self, heads: torch.Tensor, num_qo_heads: int, num_kv_heads: int,
                 cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """heads: [T, Hq + Hkv (+ more), D], q heads first, then k -> rotated q [T, Hq, D]
        and k [T, Hkv, D]. The torch route rotates q and k together (one ``apply``), the
        Triton route reads them in place from ``heads``, the native one (CPU, when this
        embedding was built with it and the tensors suit the kernel) is ``apply`` in one
        call."""
        num_rotated = num_qo_heads + num_kv_heads
        if self.triton_capable and use_triton(heads):
            q, k = heads[:, :num_qo_heads], heads[:, num_qo_heads:num_rotated]
            return apply_rotary_triton(q, k, cos, sin)
        if (ops := self.kernels.native_ops(heads, cos, sin)) is not None:
            qk = ops.rotary(heads, cos, sin, num_rotated)  # [T, Hq + Hkv, D]
        else:
            qk = self.apply(heads[:, :num_rotated], cos, sin)  # [T, Hq + Hkv, D]
        q, k = qk.split((num_qo_heads, num_kv_heads), dim=1)
        return q, k
