"""The dense matmul of the ``none`` method on the CPU: oneDNN pre-packed weights, and the
batch-invariant route (QuantLinear, the layer whose storage a QuantMethod chooses, is in
toolkit/quant/linear.py).

``F.linear`` on a bfloat16 CPU tensor asks oneDNN for a matmul with a plain row-major
weight, which oneDNN reorders (a full copy of the weight) into its blocked layout on every
call. Packing once at load time (``torch.ops.mkldnn._reorder_linear_weight``, the op that
inductor's CPU freezing pass uses) skips that copy: the same kernel runs on the same data
in the same order, so results are bit-identical, and decode-sized matmuls (M = 1 .. 64)
run about 1.5x faster on AVX-512/AMX (bench/decode_step_ab.py shows the whole step).

Bit-identity holds only while F.linear takes the same oneDNN route: above a few hundred
rows (measured: from M = 289 for a 576x576 weight, 342 for 576x1536, with 2 threads) it
switches algorithms, so inputs with more than PACKED_MAX_TOKENS rows (prefill chunks,
where the matmuls are compute bound and the reorder is amortised) keep F.linear.

Batch invariance (``device.deterministic``): a row's bits must not depend on how many rows
share the call. oneDNN's packed matmul gives that for any 2 .. a few hundred rows, in
bfloat16 and float32, on 1 thread or 2; its one-row kernel does not (it reduces K in
another order: on an AMD EPYC without AMX, one row of a 1536-wide down projection differed
in some outputs), nor does MKL's float32 sgemm (every row differed between 1 and 64 rows).
So the invariant route packs float32 too, pads a one-row input to two rows and cuts inputs
into calls of at most MAX_INVARIANT_ROWS rows. Where a CPU's oneDNN breaks that (checked at
start-up by ``batch_variance``), every call is padded to exactly MAX_INVARIANT_ROWS rows: a
fixed shape, slower but invariant by construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PACKED_MAX_TOKENS = 128
"""Inputs with more rows than this use F.linear even when a packed weight exists."""

PACKABLE_DTYPES = (torch.bfloat16,)
"""Dtypes whose CPU linear is packed for speed; float32 stays on MKL sgemm (the parity
oracle) unless the route must be batch-invariant."""

INVARIANT_DTYPES = (torch.bfloat16, torch.float32)
"""Dtypes the batch-invariant route packs (it needs oneDNN's packed matmul)."""

MAX_INVARIANT_ROWS = 128
"""The batch-invariant route cuts its input into oneDNN calls of at most this many rows."""

INVARIANT_MIN_ROWS = (2, MAX_INVARIANT_ROWS)
"""The shortest call of the batch-invariant route, in the order build_runtime tries them on
its CPU: 2 rows (fast), else MAX_INVARIANT_ROWS (every call the same shape)."""


def can_pack(weight: torch.Tensor, dtypes: tuple[torch.dtype, ...] = PACKABLE_DTYPES) -> bool:
    """True where a oneDNN-packed copy of ``weight`` [N, K] in one of ``dtypes`` can be made."""
    return (weight.device.type == "cpu" and weight.dtype in dtypes
            and weight.dim() == 2 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def pack_weight(weight: torch.Tensor, batch_size_hint: int = 16,
                batch_invariant: bool = False) -> torch.Tensor | None:
    """A oneDNN-blocked (opaque, ``is_mkldnn``) copy of ``weight`` [N, K], or None where
    packing does not apply (not a bf16 CPU tensor, float32 too when ``batch_invariant``,
    or no oneDNN in this torch build)."""
    if not can_pack(weight, INVARIANT_DTYPES if batch_invariant else PACKABLE_DTYPES):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_size_hint)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           packed: torch.Tensor | None = None, batch_invariant: bool = False,
           min_rows: int = INVARIANT_MIN_ROWS[0]) -> torch.Tensor:
    """x: [T, K], weight: [N, K] -> [T, N]; uses ``packed`` (from pack_weight) when given
    and T <= PACKED_MAX_TOKENS, F.linear otherwise (identical results either way).
    ``batch_invariant`` (with ``packed``): each row's bits independent of T, through calls
    of ``min_rows`` .. MAX_INVARIANT_ROWS rows, see above."""
    if packed is not None and batch_invariant:
        return invariant_linear(x, packed, bias, min_rows)
    if packed is not None and x.shape[0] <= PACKED_MAX_TOKENS:
        return _packed_linear(x, packed, bias)
    return F.linear(x, weight, bias)


def invariant_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None,
                     min_rows: int = INVARIANT_MIN_ROWS[0]) -> torch.Tensor:
    """x: [T, K] -> [T, N] through oneDNN calls of ``min_rows`` .. MAX_INVARIANT_ROWS rows
    each (a shorter input is padded with copies of its last row)."""
    num_rows = x.shape[0]
    if 0 < num_rows < min_rows:
        padded = torch.cat([x, x[-1:].expand(min_rows - num_rows, -1)])
        return _packed_linear(padded, packed, bias)[:num_rows]
    if num_rows <= MAX_INVARIANT_ROWS:
        return _packed_linear(x, packed, bias)
    return torch.cat([invariant_linear(part, packed, bias, min_rows)
                      for part in x.split(MAX_INVARIANT_ROWS)])


def batch_variance(weight: torch.Tensor, packed: torch.Tensor,
                   min_rows: int = INVARIANT_MIN_ROWS[0]) -> str | None:
    """Where ``invariant_linear`` gives rows other bits than among MAX_INVARIANT_ROWS + 3
    rows on this CPU ("[N, K] at 16 rows"), or None. oneDNN picks its kernels per CPU, so
    build_runtime checks each weight shape at start-up instead of trusting one CPU's test."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(MAX_INVARIANT_ROWS + 3, weight.shape[1], generator=generator)
    x = x.to(weight.dtype)
    whole = invariant_linear(x, packed, None, min_rows)
    for num_rows in (1, 2, 3, 16, 64):
        rows = invariant_linear(x[:num_rows], packed, None, min_rows)
        if not torch.equal(rows, whole[:num_rows]):
            return f"{list(weight.shape)} at {num_rows} rows"
    return None


def _packed_linear(x: torch.Tensor, packed: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
