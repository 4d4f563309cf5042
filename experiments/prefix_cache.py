"""Time to first token on a shared-prefix workload, prefix caching off vs on, in one run.

    python experiments/prefix_cache.py
    python experiments/prefix_cache.py --num-prefixes 2 --prefix-words 512 --num-requests 12 --rounds 3

Loads SmolLM2-135M-Instruct (the embedded default, bfloat16 on CPU) once. The workload is
`toolkit bench`'s shared_prefix one (conf/bench/shared_prefix.yaml: --num-prefixes
prefixes of --prefix-words random words, each request adding --suffix-words more), sent
closed-loop with --concurrency requests in flight. Each round runs it on a fresh engine
core per variant (a cold cache, so hits come only from within the workload), alternating
which variant goes first. TTFT = from add_request to the step that returns the first
token. Prints the median TTFT per variant and round, the cached / uncached ratio, the
cache's hit rate, and in how many requests the greedy outputs of both variants agree
(float32: all; bfloat16: a suffix-only prefill rounds differently, so near-ties can flip).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from toolkit.bench.workload import build_workload
from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import Runtime, build_runtime, rebuild_engine

VARIANTS = {"no-cache": False, "cache": True}


def run_closed_loop(core, prompts: list[list[int]], max_tokens: int,
                    concurrency: int) -> tuple[list[float], list[list[int]]]:
    """TTFT (s) and greedy tokens of every prompt, ``concurrency`` requests in flight."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    arrival: dict[str, float] = {}
    ttft: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    pending = list(enumerate(prompts))
    while pending or core.has_unfinished:
        while pending and core.scheduler.num_unfinished < concurrency:
            index, prompt = pending.pop(0)
            rid = f"p{index}"
            arrival[rid], tokens[rid] = time.perf_counter(), []
            core.add_request(rid, prompt, params)
        outputs = core.step()
        now = time.perf_counter()
        for output in outputs:
            if output.new_token_ids and output.request_id not in ttft:
                ttft[output.request_id] = now - arrival[output.request_id]
            tokens[output.request_id] += output.new_token_ids
    order = [f"p{i}" for i in range(len(prompts))]
    return [ttft[rid] for rid in order], [tokens[rid] for rid in order]


def variant_core(runtime: Runtime, caching: bool):
    """A fresh engine core around the loaded model (every page free, the cache empty)."""
    cache = dataclasses.replace(runtime.config.cache, enable_prefix_caching=caching)
    return rebuild_engine(runtime, dataclasses.replace(runtime.config, cache=cache)).core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prefixes", type=int, default=2)
    parser.add_argument("--prefix-words", type=int, default=256)
    parser.add_argument("--suffix-words", type=int, default=32)
    parser.add_argument("--num-requests", type=int, default=8)
    parser.add_argument("--output-len", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    overrides = ["device=cpu", f"model.dtype={args.dtype}", "model.max_model_len=4096", "cache.num_pages=1024",
                 "bench=shared_prefix", f"bench.num_prefixes={args.num_prefixes}",
                 f"bench.shared_prefix_len={args.prefix_words}",
                 f"bench.prompt_len={args.suffix_words}",
                 f"bench.num_requests={args.num_requests}"]
    if args.threads:
        overrides.append(f"device.num_threads={args.threads}")
    runtime = build_runtime(compose_config(overrides))
    prompts = [runtime.tokenizer.encode(r.prompt) for r in build_workload(runtime.config.bench)]
    print(f"{len(prompts)} prompts of {statistics.mean(map(len, prompts)):.0f} tokens on "
          f"{args.num_prefixes} prefixes, {args.output_len} output tokens, concurrency "
          f"{args.concurrency}, {args.rounds} rounds")
    run_closed_loop(variant_core(runtime, False), prompts[:1], 2, 1)  # warm-up
    medians: dict[str, list[float]] = {name: [] for name in VARIANTS}
    outputs, hit_rate = {}, 0.0
    for round_index in range(args.rounds):
        names = list(VARIANTS)[:: 1 if round_index % 2 == 0 else -1]
        for name in names:
            core = variant_core(runtime, VARIANTS[name])
            ttft, outputs[name] = run_closed_loop(core, prompts, args.output_len,
                                                  args.concurrency)
            medians[name].append(statistics.median(ttft))
            if VARIANTS[name]:
                hit_rate = core.scheduler.page_manager.prefix_cache.hit_rate()
            print(f"  round {round_index}: {name:>8} median TTFT {medians[name][-1] * 1e3:8.1f} "
                  f"ms, mean {statistics.mean(ttft) * 1e3:8.1f} ms")
    uncached, cached = (statistics.median(medians[name]) for name in VARIANTS)
    print(f"median TTFT: no-cache {uncached * 1e3:.1f} ms, cache {cached * 1e3:.1f} ms, "
          f"cache / no-cache = {cached / uncached:.3f} ({uncached / cached:.2f}x faster); "
          f"hit rate {hit_rate:.1%} of prompt tokens")
    same = sum(a == b for a, b in zip(outputs["cache"], outputs["no-cache"]))
    print(f"greedy outputs identical in {same} of {len(prompts)} requests ({args.dtype}: "
          "the cached suffix-only prefill rounds differently, so near-ties may flip)")


if __name__ == "__main__":
    main()
