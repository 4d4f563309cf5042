"""AWQ's CPU matmul routes vs the packed bf16 matmul, on SmolLM2's projection shapes.

    python experiments/awq_cpu_matmul.py                  # one thread, CPU time (robust to load)
    python experiments/awq_cpu_matmul.py --threads 2 --rows 1 16 64 128

Routes per (N, K, rows M): ``bf16`` the oneDNN-packed dense matmul (the ``none`` method's
default), ``int4`` torch's int4 CPU kernel on the repacked AWQ weight, ``dequant`` W
rebuilt from the int4 layout + a dense matmul (the awq method's route above
MAX_INT4_MM_ROWS). Times are the best of --reps of the thread's CPU time, in microseconds
(CPU time rather than wall time, so that other processes on a shared machine matter less).
"""

from __future__ import annotations

import argparse
import time

import torch

from toolkit.kernels.awq_format import quantize_groups, to_awq_tensors
from toolkit.layers.linear import linear, pack_weight
from toolkit.quant import awq_cpu

SHAPES = ((960, 576), (576, 576), (3072, 576), (576, 1536))
"""SmolLM2's (N, K): qkv, o, gate_up, down."""


def cpu_time_us(fn, reps: int, calls: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - start) / calls)
    return best * 1e6


def time_routes(out_features: int, in_features: int, rows: int, group_size: int,
                reps: int, generator: torch.Generator) -> tuple[float, float, float]:
    """(bf16, int4, dequant) best CPU times in us for one shape and row count."""
    weight = torch.randn(out_features, in_features, generator=generator) / 20
    awq = to_awq_tensors(*quantize_groups(weight, group_size))
    packed, scales_and_zeros = awq_cpu.to_int4pack(awq["qweight"], awq["qzeros"],
                                                   awq["scales"], torch.bfloat16)
    dense = weight.bfloat16()
    prepacked = pack_weight(dense)
    x = torch.randn(rows, in_features, generator=generator).bfloat16()
    return (cpu_time_us(lambda: linear(x, dense, None, prepacked), reps),
            cpu_time_us(lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(
                x, packed, group_size, scales_and_zeros), reps),
            cpu_time_us(lambda: torch.matmul(
                x, awq_cpu.dequantize_int4pack(packed, scales_and_zeros)), reps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"threads {args.threads}, group {args.group_size}, best CPU time of {args.reps} (us)")
    print(f"{'N x K':>11} {'M':>4} {'bf16':>8} {'int4':>8} {'dequant':>8} {'int4/bf16':>10}")
    for out_features, in_features in SHAPES:
        for rows in args.rows:
            bf16, int4, dequant = time_routes(out_features, in_features, rows,
                                              args.group_size, args.reps, generator)
            print(f"{out_features:>5} x {in_features:<4} {rows:>4} {bf16:>8.0f} {int4:>8.0f} "
                  f"{dequant:>8.0f} {int4 / bf16:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
