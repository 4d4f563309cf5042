"""Aggregate decode throughput at 1 and N concurrent streams, side by side in one run.

    python experiments/decode_throughput.py                       # SmolLM2, bf16, 1 vs 16 streams
    python experiments/decode_throughput.py --streams 1 16 64 -- model.dtype=float32
    python experiments/decode_throughput.py --output-len 64 \
        --ab device.prepack_weights=false device.prepack_weights=true   # A/B, interleaved

With --ab, one runtime is built per variant (each a space-separated list of overrides on
top of the positional ones) and the variants run alternately, --rounds times per
concurrency, so that noise on a shared machine hits them alike; each variant's median
rate, its best, and the ratio of its median to the first variant's are printed, and
the greedy outputs of every variant are checked against the first one.

Drives the in-process EngineCore (no HTTP): every stream gets its own ~200-token prompt
(they share the chat template's first tokens, as a served batch does, no more) and
generates exactly --output-len tokens (ignore_eos). Prints one row per concurrency and
the ratio of each aggregate rate to the single-stream rate.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import statistics
import time
from collections.abc import Callable

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime

PASSAGE = (
    "The sea is a vast body of salt water that covers most of the Earth's surface. "
    "Its tides follow the moon, its currents carry heat from the equator to the poles, "
    "and its waves are raised by winds that blow across thousands of kilometres. "
)


_run_ids = iter(range(1 << 30))


def run(core, prompts: list[list[int]], num_streams: int, output_len: int) -> dict:
    """``num_streams`` requests at once, stream i with ``prompts[i]``."""
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    run_id = next(_run_ids)
    for i in range(num_streams):
        core.add_request(f"bench-{run_id}-{i}", prompts[i], params)
    start = time.perf_counter()
    first_token_at = None
    num_tokens = 0
    token_ids: dict[str, list[int]] = {}
    while core.has_unfinished:
        outputs = core.step()
        if outputs and first_token_at is None:
            first_token_at = time.perf_counter()
        num_tokens += sum(len(o.new_token_ids) for o in outputs)
        for o in outputs:
            token_ids.setdefault(o.request_id, []).extend(o.new_token_ids)
    elapsed = time.perf_counter() - start
    decode_time = elapsed - (first_token_at - start)
    return {"streams": num_streams, "tokens": num_tokens, "seconds": elapsed,
            "tokens_per_s": num_tokens / elapsed,
            "decode_tokens_per_s": (num_tokens - num_streams) / decode_time,
            "outputs": [token_ids[k] for k in sorted(token_ids)]}


def interleaved_rounds(runs: dict[str, Callable[[], dict]], rounds: int) -> dict[str, list[dict]]:
    """Each variant's ``run`` results over ``rounds`` rounds, the variants alternating round by
    round so that machine noise hits them alike."""
    rows: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run_once in runs.items():
            rows[name].append(run_once())
    return rows


def rates(rows: list[dict]) -> tuple[float, float, float]:
    """One variant's rounds -> (median tok/s, best tok/s, median decode-only tok/s)."""
    return (statistics.median(r["tokens_per_s"] for r in rows),
            max(r["tokens_per_s"] for r in rows),
            statistics.median(r["decode_tokens_per_s"] for r in rows))


def run_ab(variants: list[str], base_overrides: list[str], streams: list[int],
           output_len: int, rounds: int) -> None:
    """Each variant's runtime, run alternately per concurrency; medians and ratios."""
    runtimes = [build_runtime(compose_config(base_overrides + shlex.split(v)))
                for v in variants]
    prompt_ids = prompts(runtimes[0], max(streams))
    for runtime in runtimes:
        run(runtime.core, prompt_ids, min(2, len(prompt_ids)), 8)  # warm-up
    print(f"prompt tokens: {len(prompt_ids[0])}, output tokens per stream: {output_len}, "
          f"{rounds} rounds, variants interleaved")
    print(f"{'streams':>7} {'variant':>40} {'tok/s':>8} {'best':>8} {'decode tok/s':>13} "
          f"{'x first':>8} {'same outputs':>12}")
    for num_streams in streams:
        rows = list(interleaved_rounds({
            str(i): functools.partial(run, runtime.core, prompt_ids, num_streams, output_len)
            for i, runtime in enumerate(runtimes)}, rounds).values())
        first = rates(rows[0])[0]
        for variant, variant_rows in zip(variants, rows):
            rate, best, decode = rates(variant_rows)
            same = all(r["outputs"] == rows[0][0]["outputs"] for r in variant_rows)
            print(f"{num_streams:>7} {variant or '(no overrides)':>40} {rate:>8.1f} {best:>8.1f} "
                  f"{decode:>13.1f} {rate / first:>8.2f} {same!s:>12}")


def prompts(runtime, num_prompts: int) -> list[list[int]]:
    """``num_prompts`` chat prompts of ~200 tokens, each its own from its first word on (no
    prefix cache shares their K/V)."""
    request = PASSAGE * 3 + "Summarise this in one paragraph."
    return [runtime.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Note {i}. {request}"}]) for i in range(num_prompts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--ab", nargs="+", metavar="OVERRIDES", default=None,
                        help="variants to compare in one run, each a quoted, space-separated "
                             "list of overrides ('' for none)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant with --ab")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.dtype=float32")
    args = parser.parse_args()
    if args.ab:
        run_ab(args.ab, args.overrides, args.streams, args.output_len, args.rounds)
        return
    runtime = build_runtime(compose_config(args.overrides))
    prompt_ids = prompts(runtime, max(args.streams))
    run(runtime.core, prompt_ids, min(2, len(prompt_ids)), 8)  # warm-up
    print(f"prompt tokens: {len(prompt_ids[0])}, output tokens per stream: {args.output_len}")
    print(f"{'streams':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>8} {'decode tok/s':>13} {'x single':>9}")
    single = None
    for num_streams in args.streams:
        row = run(runtime.core, prompt_ids, num_streams, args.output_len)
        single = single or row["tokens_per_s"]
        print(f"{row['streams']:>7} {row['tokens']:>7} {row['seconds']:>8.2f} "
              f"{row['tokens_per_s']:>8.1f} {row['decode_tokens_per_s']:>13.1f} "
              f"{row['tokens_per_s'] / single:>9.2f}")


if __name__ == "__main__":
    main()
