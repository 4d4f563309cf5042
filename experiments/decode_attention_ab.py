"""The native decode attention of two or more versions of toolkit/kernels/cpu/ops.cpp, side by
side in one process, calls interleaved (SmolLM2's shapes: 30 layers, 9 q heads on 3 kv heads
of 64, pages of 16 scattered over the cache as a served batch leaves them).

    git show HEAD~1:toolkit/kernels/cpu/ops.cpp > /tmp/old.cpp
    python experiments/decode_attention_ab.py /tmp/old.cpp toolkit/kernels/cpu/ops.cpp
    python experiments/decode_attention_ab.py --rows 1 --context 2000 /tmp/old.cpp NEW.cpp
    python experiments/decode_attention_ab.py --prefill --rows 2 --context 228 OLD NEW

Each file is compiled as its own extension with this tree's other sources and ops.h (as
toolkit/kernels/native.py builds the kernels, ~30 s each the first time). A step: one decode_attention call per layer for --rows requests of
--context positions each (or, with --prefill, every position of --rows prompts attended as
its own row, the batch-invariant route's prefill). Prints each version's median and best step
time over --rounds rounds (the first two left out) and the KV bytes a step reads per second.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import statistics
import time

import torch
from torch.utils import cpp_extension

from toolkit.kernels import native

NUM_LAYERS, PAGE_SIZE, NUM_KV_HEADS, GROUP, HEAD_DIM = 30, 16, 3, 3, 64


def build(path: pathlib.Path):
    """``path`` as the module's ops.cpp, with this tree's other sources and header."""
    others = native.SOURCES[1:]
    tag = hashlib.sha1(b"".join(p.read_bytes() for p in (path, *others, *native.HEADERS)))
    return cpp_extension.load(name=f"decode_attention_ab_{tag.hexdigest()[:10]}",
                              sources=[str(p) for p in (path, *others)],
                              extra_include_paths=[str(native.SOURCE.parent)],
                              extra_cflags=native.CFLAGS, extra_ldflags=["-fopenmp"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=pathlib.Path, help="ops.cpp versions")
    parser.add_argument("--rows", type=int, default=64, help="requests in the step")
    parser.add_argument("--context", type=int, default=292, help="positions per request")
    parser.add_argument("--prefill", action="store_true", help="attend every position")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    modules = {path: build(path) for path in args.sources}
    torch.manual_seed(0)
    pages_per_row = -(-args.context // PAGE_SIZE)
    num_pages = args.rows * pages_per_row
    caches = [torch.randn(num_pages, 2, PAGE_SIZE, NUM_KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
              for _ in range(NUM_LAYERS)]
    kv_indices = torch.randperm(num_pages).to(torch.int32)
    starts = torch.arange(0, num_pages, pages_per_row, dtype=torch.int32)  # [rows]
    lens = torch.full((args.rows,), args.context, dtype=torch.int32)
    if args.prefill:
        starts = starts.repeat_interleave(args.context)
        lens = torch.arange(1, args.context + 1, dtype=torch.int32).repeat(args.rows)
    q = torch.randn(lens.numel(), NUM_KV_HEADS * GROUP, HEAD_DIM, dtype=torch.bfloat16)
    times: dict[pathlib.Path, list[float]] = {path: [] for path in modules}
    for _ in range(args.rounds):
        for path, module in modules.items():
            start = time.perf_counter()
            for cache in caches:
                module.decode_attention(q, cache, kv_indices, starts, lens, HEAD_DIM**-0.5)
            times[path].append(time.perf_counter() - start)
    kv_bytes = NUM_LAYERS * args.rows * args.context * NUM_KV_HEADS * HEAD_DIM * 2 * 2
    what = "prefill rows" if args.prefill else "decode rows"
    print(f"{args.rows} requests x {args.context} positions, {what}, {args.rounds} rounds")
    for path, samples in times.items():
        median, best = statistics.median(samples[2:]), min(samples[2:])
        print(f"{str(path):>50}: median {median * 1e3:7.2f} ms, best {best * 1e3:7.2f} ms, "
              f"{kv_bytes / median / 1e9:5.1f} GB/s of KV")


if __name__ == "__main__":
    main()
