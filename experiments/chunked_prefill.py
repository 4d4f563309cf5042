"""Inter-token latency of running streams while a long prompt arrives, with and without
chunked prefill, in one run.

    python experiments/chunked_prefill.py
    python experiments/chunked_prefill.py --streams 4 --long-prompt 2000 --chunk 256 --rounds 3

Loads SmolLM2-135M-Instruct (bfloat16 on CPU) once. Each round, per variant on a fresh
engine core: --streams requests decode until each has --warmup tokens, then one
--long-prompt-token prompt arrives; stepping goes on until it has its first token and
--after more steps. Variants (prefix caching off in both, so rounds do not hit):

    unchunked  scheduler.enable_chunked_prefill=false, max_num_batched_tokens=long prompt
               + streams (the whole prompt in one step, as it must be)
    chunked    scheduler.enable_chunked_prefill=true, max_num_batched_tokens=--chunk

Inter-token latency (ITL) = the gaps between consecutive tokens of the running streams
from the long prompt's arrival on. Prints median / p90 / max ITL and the long prompt's
TTFT per variant (medians over rounds, alternating which variant goes first) and the
chunked / unchunked ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from toolkit.bench.workload import random_text
from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import Runtime, build_runtime, rebuild_engine

LONG_ID = "long"


def variant_core(runtime: Runtime, chunked: bool, budget: int):
    scheduler = dataclasses.replace(runtime.config.scheduler, enable_chunked_prefill=chunked,
                                    max_num_batched_tokens=budget)
    return rebuild_engine(runtime, dataclasses.replace(runtime.config,
                                                       scheduler=scheduler)).core


def run_round(core, streams: list[list[int]], long_prompt: list[int], args) -> dict:
    """Token timestamps of the streams around the long prompt's arrival -> ITL gaps and
    the long prompt's TTFT (seconds)."""
    params = SamplingParams(max_tokens=10_000, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(streams):
        core.add_request(f"s{i}", prompt, params)
    last_token_at: dict[str, float] = {}
    counts: dict[str, int] = {}
    while len(counts) < len(streams) or min(counts.values()) < args.warmup:
        for output in core.step():
            last_token_at[output.request_id] = time.perf_counter()
            counts[output.request_id] = counts.get(output.request_id, 0) + 1
    arrival = time.perf_counter()
    core.add_request(LONG_ID, long_prompt, SamplingParams(max_tokens=1, temperature=0.0))
    gaps, ttft, steps_after = [], None, 0
    while steps_after < args.after:
        outputs = core.step()
        now = time.perf_counter()
        for output in outputs:
            if output.request_id == LONG_ID:
                ttft = now - arrival
            else:
                gaps.append(now - last_token_at[output.request_id])
                last_token_at[output.request_id] = now
        steps_after += ttft is not None
    for i in range(len(streams)):
        core.abort_request(f"s{i}")
    return {"gaps": gaps, "ttft": ttft}


def summarize(gaps: list[float]) -> dict[str, float]:
    ordered = sorted(gaps)
    return {"median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "max": ordered[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--stream-prompt", type=int, default=64, help="tokens")
    parser.add_argument("--long-prompt", type=int, default=2000, help="tokens")
    parser.add_argument("--chunk", type=int, default=256, help="chunked token budget")
    parser.add_argument("--warmup", type=int, default=3, help="stream tokens before arrival")
    parser.add_argument("--after", type=int, default=3, help="steps after the long TTFT")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    overrides = ["device=cpu", "model.max_model_len=4096", "cache.num_pages=1024",
                 "cache.enable_prefix_caching=false"]
    if args.threads:
        overrides.append(f"device.num_threads={args.threads}")
    runtime = build_runtime(compose_config(overrides))

    def tokens(num_tokens: int, seed: int) -> list[int]:
        import numpy as np

        text = random_text(np.random.default_rng(seed), num_tokens)
        return runtime.tokenizer.encode(text)[:num_tokens]

    streams = [tokens(args.stream_prompt, seed=i) for i in range(args.streams)]
    long_prompt = tokens(args.long_prompt, seed=1000)
    assert len(long_prompt) == args.long_prompt, "random text gave too few tokens"
    variants = {"unchunked": (False, args.long_prompt + args.streams),
                "chunked": (True, args.chunk)}
    print(f"{args.streams} streams, a {args.long_prompt}-token prompt arrives; chunk budget "
          f"{args.chunk}; {args.rounds} rounds")
    run_round(variant_core(runtime, True, args.chunk), streams[:1], long_prompt[:64],
              argparse.Namespace(warmup=1, after=1))  # warm-up
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        names = list(variants)[:: 1 if round_index % 2 == 0 else -1]
        for name in names:
            result = run_round(variant_core(runtime, *variants[name]), streams, long_prompt,
                               args)
            stats = summarize(result["gaps"])
            results[name].append({**stats, "ttft": result["ttft"]})
            print(f"  round {round_index}: {name:>9} ITL median {stats['median'] * 1e3:7.1f} "
                  f"p90 {stats['p90'] * 1e3:7.1f} max {stats['max'] * 1e3:7.1f} ms; long "
                  f"prompt TTFT {result['ttft'] * 1e3:7.1f} ms")
    report(results)


def report(results: dict[str, list[dict]]) -> None:
    medians = {name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
               for name, rounds in results.items()}
    for name, m in medians.items():
        print(f"{name:>9}: ITL median {m['median'] * 1e3:.1f} ms, p90 {m['p90'] * 1e3:.1f} ms, "
              f"max {m['max'] * 1e3:.1f} ms; long prompt TTFT {m['ttft'] * 1e3:.1f} ms")
    chunked, unchunked = medians["chunked"], medians["unchunked"]
    print("chunked / unchunked: " + ", ".join(
        f"{key} {chunked[key] / unchunked[key]:.3f}" for key in ("median", "p90", "max", "ttft")))


if __name__ == "__main__":
    main()
