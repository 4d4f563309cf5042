"""quant=w8a8's int32 matmuls over SmolLM2's 30 layers (q/k/v [960, 576], o [576, 576],
gate/up [3072, 576], down [576, 1536]) through torch's ``_int_mm`` (oneDNN, the weight's
[K, N] view) and the native ``q8_int_mm`` (toolkit/kernels/cpu/q8.cpp, the weight in
q8_linear's layout), side by side in one process, at each --rows.

    python experiments/int8_matmul_ab.py
    python experiments/int8_matmul_ab.py --rows 16 64 --rounds 8

Both give the same int32 sums (checked on every layer first). Prints the best time of a
pass over the 120 matmuls for each, alternating the two kernels --rounds times.
"""

from __future__ import annotations

import argparse
import time

import torch

from toolkit.kernels.q8_linear import pack_q8
from toolkit.kernels.route import native_route

SHAPES = ((960, 576), (576, 576), (3072, 576), (576, 1536))
NUM_LAYERS = 30


def pass_ms(matmul, inputs, layers) -> float:
    """One matmul per layer: its input by the input width, the layer's weight."""
    started = time.perf_counter()
    for in_features, weight in layers:
        matmul(inputs[in_features], weight)
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
    onednn = [(w.shape[1], w.t()) for w in codes]
    native = [(w.shape[1], pack_q8(w)) for w in codes]
    print(f"{torch.get_num_threads()} threads")
    print("| rows | _int_mm ms | q8_int_mm ms | speedup |\n|---|---|---|---|")
    for num_rows in args.rows:
        inputs = {k: torch.randint(-127, 128, (num_rows, k), generator=generator,
                                   dtype=torch.int8) for k in {k for _, k in SHAPES}}
        for (k, weight_t), (_, packed) in zip(onednn, native):
            assert torch.equal(torch._int_mm(inputs[k], weight_t),
                               ops.q8_int_mm(inputs[k], packed))
        times = [float("inf"), float("inf")]
        for _ in range(args.rounds):  # alternate, so both see the same machine
            times[0] = min(times[0], pass_ms(torch._int_mm, inputs, onednn))
            times[1] = min(times[1], pass_ms(ops.q8_int_mm, inputs, native))
        print(f"| {num_rows} | {times[0]:.2f} | {times[1]:.2f} | {times[0] / times[1]:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
