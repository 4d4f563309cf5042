"""SmolLM2's LM head [49152, 576] through its three CPU kernels, side by side in one process:
the oneDNN-packed bf16 matmul (dense head), torch's int8 weight-only kernel
(``_weight_int8pack_mm``, the int8 head's torch route) and q8_linear (its native route,
toolkit/kernels/q8_linear.py), at each --rows.

    python experiments/lm_head_ab.py
    python experiments/lm_head_ab.py --rows 1 8 64 --cold

Prints each kernel's best time per call over --rounds rounds of --calls calls. With --cold,
a 256 MB buffer is read before every call (untimed), so the head comes from DRAM as it does
in a decode step, after the layers' weights; without it, from whatever cache holds it.
"""

from __future__ import annotations

import argparse
import time

import torch

from toolkit.kernels.route import native_route
from toolkit.layers.linear import linear, pack_weight
from toolkit.quant.int8_lm_head import Int8LMHead

VOCAB_SIZE, HIDDEN_SIZE = 49152, 576


def best_call_ms(call, calls: int, rounds: int, evict: torch.Tensor | None) -> float:
    call()
    best = float("inf")
    for _ in range(rounds):
        elapsed = 0.0
        for _ in range(calls):
            if evict is not None:
                evict.sum()
            started = time.perf_counter()
            call()
            elapsed += time.perf_counter() - started
        best = min(best, elapsed / calls)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="evict caches before each call")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(VOCAB_SIZE, HIDDEN_SIZE, generator=generator) * 0.05).bfloat16()
    packed = pack_weight(weight)
    torch_head = Int8LMHead.quantize(weight)
    route = native_route()
    native_head = Int8LMHead.quantize(weight, route)
    evict = torch.ones(64 << 20, dtype=torch.float32) if args.cold else None
    print(f"{torch.get_num_threads()} threads, {'cold' if args.cold else 'warm'} head")
    print("| rows | bf16 packed ms | int8pack ms | q8_linear ms |\n|---|---|---|---|")
    for num_rows in args.rows:
        hidden = torch.randn(num_rows, HIDDEN_SIZE, generator=generator).bfloat16()
        kernels = (lambda: linear(hidden, weight, None, packed),
                   lambda: torch.ops.aten._weight_int8pack_mm(hidden, torch_head.codes,
                                                               torch_head.scales),
                   lambda: route.ops.q8_linear(hidden, native_head.codes, native_head.scales))
        times = [best_call_ms(call, args.calls, args.rounds, evict) for call in kernels]
        print(f"| {num_rows} | " + " | ".join(f"{ms:.2f}" for ms in times) + " |", flush=True)


if __name__ == "__main__":
    main()
