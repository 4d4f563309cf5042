"""quant=w8a8's projections over SmolLM2's 30 layers (q/k/v [960, 576], o [576, 576],
gate/up [3072, 576], down [576, 1536]) after their activations' quantization: the int32
matmul and the scaling to bf16 (toolkit/kernels/int8_rows.py dequantize_rows), through
torch's ``_int_mm`` (oneDNN, the weight's [K, N] view), the native ``q8_int_mm``
(toolkit/kernels/cpu/q8.cpp, the weight in q8_linear's layout), and ``q8_scaled_mm``, which
scales each tile of q8_int_mm's sums in the same pass; side by side in one process, at
each --rows.

    python experiments/int8_matmul_ab.py
    python experiments/int8_matmul_ab.py --rows 16 64 --rounds 8

All three give the same bits (checked on every layer first). Prints the best time of a
pass over the 120 projections for each, alternating the kernels --rounds times.
"""

from __future__ import annotations

import argparse
import time

import torch

from toolkit.kernels.q8_linear import pack_q8
from toolkit.kernels.route import native_route

SHAPES = ((960, 576), (576, 576), (3072, 576), (576, 1536))
NUM_LAYERS = 30


def pass_ms(projection, inputs, layers) -> float:
    """One projection per layer: its input by the input width, the layer's weight and
    scales."""
    started = time.perf_counter()
    for in_features, weight, col_scales in layers:
        projection(*inputs[in_features], weight, col_scales)
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ops = native_route().ops
    generator = torch.Generator().manual_seed(0)
    codes = [torch.randint(-127, 128, shape, generator=generator, dtype=torch.int8)
             for _ in range(NUM_LAYERS) for shape in SHAPES]
    col_scales = [torch.rand(w.shape[0], generator=generator) * 1e-3 for w in codes]
    onednn = [(w.shape[1], w.t(), s) for w, s in zip(codes, col_scales)]
    native = [(w.shape[1], pack_q8(w), s) for w, s in zip(codes, col_scales)]

    def dequantize(acc, row_scales, col):
        return ops.dequantize_rows(acc, row_scales, col, None, torch.bfloat16)

    kernels = {
        "_int_mm": (onednn, lambda x, r, w, c: dequantize(torch._int_mm(x, w), r, c)),
        "q8_int_mm": (native, lambda x, r, w, c: dequantize(ops.q8_int_mm(x, w), r, c)),
        "q8_scaled_mm": (native, lambda x, r, w, c: ops.q8_scaled_mm(x, r, w, c, None,
                                                                     torch.bfloat16)),
    }
    print(f"{torch.get_num_threads()} threads, ms per pass (int32 matmul + scaling to bf16)")
    print("| rows | " + " | ".join(kernels) + " | speedup of the last |")
    print("|---" * (len(kernels) + 2) + "|")
    for num_rows in args.rows:
        inputs = {k: (torch.randint(-127, 128, (num_rows, k), generator=generator,
                                    dtype=torch.int8),
                      torch.rand(num_rows, generator=generator) * 1e-2)
                  for k in {k for _, k in SHAPES}}
        for index in range(len(codes)):
            outputs = [call(*inputs[layers[index][0]], *layers[index][1:])
                       for layers, call in kernels.values()]
            assert all(torch.equal(outputs[0], out) for out in outputs[1:])
        times = {name: float("inf") for name in kernels}
        for _ in range(args.rounds):  # alternate, so all see the same machine
            for name, (layers, call) in kernels.items():
                times[name] = min(times[name], pass_ms(call, inputs, layers))
        first, last = times["_int_mm"], times["q8_scaled_mm"]
        print(f"| {num_rows} | " + " | ".join(f"{ms:.2f}" for ms in times.values())
              + f" | {first / last:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
