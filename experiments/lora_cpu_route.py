"""Where a decode step's LoRA time goes on the CPU: per projection shape of SmolLM2, the
base matmul vs the per-adapter route of toolkit/lora/layer.py (index_select, two
batch-invariant oneDNN matmuls, index_add per adapter of the step) vs two one-call
alternatives (every slot's A in one packed matmul then every slot's B on a block-sparse
input; the rows' adapters gathered into a bmm), all interleaved in one process.

    python experiments/lora_cpu_route.py [--rows 16] [--slots 16] [--rank 8] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import time

import torch

from toolkit.layers.linear import linear, pack_weight

SHAPES = {"qkv": (576, [576, 192, 192]), "o": (576, [576]), "gate_up": (576, [1536, 1536]),
          "down": (1536, [576])}
"""name -> (in_features, output sizes of the fused parts) of one SmolLM2 layer."""
NUM_LAYERS = 30


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    slots = torch.arange(args.rows) % args.slots
    groups = [(s, (slots == s).nonzero().squeeze(1)) for s in sorted(set(slots.tolist()))]
    totals = {"base": 0.0, "per_adapter": 0.0, "all_slots": 0.0, "bmm_gather": 0.0}
    for name, (k, parts) in SHAPES.items():
        n, q = sum(parts), len(parts) * args.rank
        x = torch.randn(args.rows, k).to(dtype)
        w = torch.randn(n, k).to(dtype)
        a = torch.randn(args.slots, q, k).to(dtype)  # [S, Q, K]
        b = torch.randn(args.slots, n, q).to(dtype)  # [S, N, Q]
        pw = pack_weight(w, batch_invariant=True)
        pa = [pack_weight(a[s], batch_invariant=True) for s in range(args.slots)]
        pb = [pack_weight(b[s], batch_invariant=True) for s in range(args.slots)]
        a_all = pack_weight(a.reshape(-1, k), batch_invariant=True)  # [S * Q, K]
        b_wide = b.permute(1, 0, 2).reshape(n, -1)  # [N, S * Q]
        b_all = pack_weight(b_wide, batch_invariant=True)
        row_block = slots.unsqueeze(1) * q + torch.arange(q)  # [T, Q] columns of each row

        def base():
            return linear(x, w, None, pw, True, 2)

        def per_adapter():
            y = base()
            for s, rows in groups:
                shrunk = linear(x.index_select(0, rows), a[s], None, pa[s], True, 2)
                y.index_add_(0, rows, linear(shrunk, b[s], None, pb[s], True, 2))
            return y

        def all_slots():
            y = base()
            every = linear(x, a.reshape(-1, k), None, a_all, True, 2)  # [T, S * Q]
            sparse = torch.zeros_like(every)
            sparse.scatter_(1, row_block, every.gather(1, row_block))
            return y + linear(sparse, b_wide, None, b_all, True, 2)

        def bmm_gather():
            y = base()
            shrunk = torch.bmm(a[slots], x.unsqueeze(2))  # [T, Q, 1]
            return y + torch.bmm(b[slots], shrunk).squeeze(2)

        for label, fn in (("base", base), ("per_adapter", per_adapter),
                          ("all_slots", all_slots), ("bmm_gather", bmm_gather)):
            seconds = timed(fn, args.repeats)
            totals[label] += seconds * NUM_LAYERS
            print(f"{name:8s} {label:12s} {seconds * 1e3:8.3f} ms", flush=True)
    print("per decode step of 30 layers (projections only, ms):",
          {label: round(t * 1e3, 1) for label, t in totals.items()})


if __name__ == "__main__":
    main()
